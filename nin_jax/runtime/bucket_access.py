"""Whether a run can use its gs:// workdir, asked before the run starts.

A run in a bucket needs the network, credentials, the bucket, and five
permissions. Missing any of them, it used to fail late and in a library's
words: gcsfs retries an unreachable endpoint for most of a minute and prints
pages of aiohttp tracebacks; a missing bucket reads as an upload URL; and
Orbax 0.12 calls `google.cloud.storage.Client().get_bucket()`, i.e.
storage.buckets.get, which roles/storage.objectAdmin lacks, whenever it lists
checkpoint steps (every resume) and deletes old ones (the first run's 4th
checkpoint). `check` asks each question once, with a short deadline, through
the client Orbax uses, and turns the first failure into one line: the bucket,
the cause, and the command that fixes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid

from nin_jax.runtime import sharding

DEADLINE_S = 10.0  # For all the questions together; a run's start-up takes longer.

# Each permission a run uses: why, and the predefined role that grants it.
PERMISSIONS = {
    'storage.buckets.get': ('Orbax reads the bucket to list and to delete checkpoints',
                            'roles/storage.legacyBucketReader'),
    'storage.objects.list': ('the run lists its checkpoints', 'roles/storage.objectAdmin'),
    'storage.objects.create': ('the run writes checkpoints and logs',
                               'roles/storage.objectAdmin'),
    'storage.objects.get': ('the run reads checkpoints and logs back',
                            'roles/storage.objectAdmin'),
    'storage.objects.delete': ('the run replaces logs and deletes old checkpoints',
                               'roles/storage.objectAdmin'),
}


class BucketAccessError(ValueError):
  """The workdir's bucket cannot be used: unreachable, no credentials, absent, or forbidden."""


def check_every_process(workdir: str) -> None:
  """`check` on every process (each writes its checkpoint shards); all stop if one fails."""
  error = None
  try:
    check(workdir)
  except BucketAccessError as e:
    error = e
  failed = [i for i, bad in enumerate(sharding.gather_from_processes(error is not None)) if bad]
  if error is not None:
    raise error
  if failed:
    raise BucketAccessError(f'{workdir}: process {failed[0]} cannot use the bucket '
                            '(its own error line says why)')


def check(workdir: str) -> None:
  """Raises BucketAccessError unless this process can do in `workdir` what a run does there."""
  bucket, _ = _bucket_and_prefix(workdir)
  outcome: list[BaseException | None] = []

  def ask():
    try:
      _ask(workdir)
      outcome.append(None)
    except BaseException as e:  # pylint: disable=broad-except
      outcome.append(e)
  thread = threading.Thread(target=ask, name='bucket-access-check', daemon=True)
  # Their warnings on the way (retries, a missing metadata server): the outcome says it all.
  loggers = [logging.getLogger(name) for name in ('urllib3', 'google.auth')]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    thread.start()
    thread.join(DEADLINE_S)
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
  if not outcome:
    raise BucketAccessError(
        f'{workdir}: no answer from Cloud Storage ({_endpoint()}) within {DEADLINE_S:.0f} s '
        f'about bucket gs://{bucket}: no network, or a firewall dropping the connection?')
  if outcome[0] is not None:
    raise outcome[0]


def _bucket_and_prefix(workdir: str) -> tuple[str, str]:
  bucket, _, prefix = workdir[len('gs://'):].partition('/')
  return bucket, prefix.strip('/')


def _endpoint() -> str:
  return os.environ.get('STORAGE_EMULATOR_HOST') or 'https://storage.googleapis.com'


def _ask(workdir: str) -> None:
  """Gets the bucket, lists the workdir, then writes, reads and deletes a probe object."""
  import google.auth.exceptions
  from google.cloud import storage as gcs
  bucket_name, prefix = _bucket_and_prefix(workdir)
  try:
    client = gcs.Client()
  except google.auth.exceptions.DefaultCredentialsError:
    raise BucketAccessError(
        f'{workdir}: no Google Cloud credentials found to reach bucket gs://{bucket_name}. '
        'Run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS '
        'to a key file, or run on a VM whose service account may use the bucket') from None
  probe = client.bucket(bucket_name).blob(
      f'{prefix}/.access-check-{uuid.uuid4().hex}'.lstrip('/'))
  timeout = DEADLINE_S / 2
  questions = [
      ('storage.buckets.get', lambda: client.get_bucket(bucket_name, timeout=timeout, retry=None)),
      ('storage.objects.list', lambda: list(client.list_blobs(
          bucket_name, prefix=prefix, max_results=1, timeout=timeout, retry=None))),
      ('storage.objects.create', lambda: probe.upload_from_string(
          b'', timeout=timeout, retry=None)),
      ('storage.objects.get', lambda: probe.download_as_bytes(timeout=timeout, retry=None)),
      ('storage.objects.delete', lambda: probe.delete(timeout=timeout, retry=None)),
  ]
  answered = []
  try:
    for permission, question in questions:
      try:
        question()
      except Exception as e:  # pylint: disable=broad-except
        raise _explain(e, workdir, bucket_name, permission, client) from None
      answered.append(permission)
  finally:
    if 'storage.objects.create' in answered and 'storage.objects.delete' not in answered:
      with contextlib.suppress(Exception):  # The probe should not outlive a refused read.
        probe.delete(timeout=timeout, retry=None)


def _explain(error: Exception, workdir: str, bucket: str, permission: str,
             client) -> BucketAccessError:
  """The one line a failed question becomes."""
  import google.auth.exceptions as auth
  import requests
  from google.api_core import exceptions as api
  if isinstance(error, api.Forbidden):
    purpose, role = PERMISSIONS[permission]
    who, member = _principal(error, client)
    return BucketAccessError(
        f'{workdir}: {who} lacks {permission} on bucket gs://{bucket} ({purpose}). '
        'Grant it with: '
        f'gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} '
        f'--role={role}')
  if isinstance(error, api.NotFound) and permission == 'storage.buckets.get':
    return BucketAccessError(
        f'{workdir}: bucket gs://{bucket} does not exist. Create it with `gcloud storage '
        f'buckets create gs://{bucket} --location=REGION`, or correct --workdir')
  if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        auth.TransportError)):
    host = re.search(r"host='([^']+)', port=(\d+)", str(error))
    return BucketAccessError(
        f'{workdir}: cannot reach {":".join(host.groups()) if host else _endpoint()} for bucket '
        f'gs://{bucket}: {_network_reason(error)}. No network, or a proxy or firewall in '
        'the way?')
  if isinstance(error, (api.Unauthorized, auth.RefreshError)):
    return BucketAccessError(
        f'{workdir}: the credentials for bucket gs://{bucket} were refused '
        f'({_first_line(error)}); renew them with `gcloud auth application-default login`')
  return BucketAccessError(f'{workdir}: checking {permission} on bucket gs://{bucket} failed: '
                           f'{type(error).__name__}: {_first_line(error)}')


def _principal(error: Exception, client) -> tuple[str, str]:
  """(who, --member=) to grant: the principal GCS named in its 403, or the service account."""
  named = re.search(r'([\w.+-]+@[\w.-]+) does not have', str(error))
  email = named.group(1) if named else getattr(
      getattr(client, '_credentials', None), 'service_account_email', None)
  if not email or '@' not in email:  # A user's own login: gcloud knows the address.
    return 'the account in use', 'user:$(gcloud config get-value account)'
  kind = 'serviceAccount' if email.endswith('gserviceaccount.com') else 'user'
  return email, f'{kind}:{email}'


def _network_reason(error: Exception) -> str:
  text = str(error)
  if re.search(r'Name or service not known|NameResolution|nodename nor servname|'
               r'Temporary failure in name resolution', text):
    return 'its name does not resolve'
  if 'Connection refused' in text:
    return 'the connection was refused'
  if 'timed out' in text.lower() or 'timeout' in text.lower():
    return 'the connection timed out'
  return _first_line(error)


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
