#!/usr/bin/env bash
# Builds what benchmarks/device_run.sh carries to the lent GPU (`make device-payload`):
#   .whl/                 the wheels in benchmarks/device_wheels.txt, for CPython 3.12 x86-64
#   .data/fashion-mnist/  the four Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)
# Both folders are git-ignored; name them in the device call's `carry`. Fails if
# they add up to more than PAYLOAD_LIMIT_MIB (48).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
IDX_SOURCE=${IDX_SOURCE:-/usr/share/datasets/fashion-mnist}
PAYLOAD_LIMIT_MIB=${PAYLOAD_LIMIT_MIB:-48}
rm -rf .whl .data/fashion-mnist
mkdir -p .whl .data/fashion-mnist
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_17_x86_64 --platform any \
    -d .whl -r benchmarks/device_wheels.txt
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
            t10k-labels-idx1-ubyte; do
  file=$(ls "$IDX_SOURCE/$stem.gz" "$IDX_SOURCE/$stem" 2>/dev/null | head -1) || true
  [ -n "$file" ] || { echo "error: no $stem(.gz) in $IDX_SOURCE (apt-get install dataset-fashion-mnist, or set IDX_SOURCE)" >&2; exit 2; }
  cp "$file" .data/fashion-mnist/
done
bytes=$(cat .whl/* .data/fashion-mnist/* | wc -c)
ls -l .whl .data/fashion-mnist
echo "payload: $bytes bytes ($(( (bytes + 1048575) / 1048576 )) MiB; limit $PAYLOAD_LIMIT_MIB MiB)"
if [ "$bytes" -gt $(( PAYLOAD_LIMIT_MIB * 1048576 )) ]; then
  echo "error: the payload is over $PAYLOAD_LIMIT_MIB MiB" >&2
  exit 1
fi
