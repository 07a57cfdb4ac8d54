#!/bin/sh
# Usage (compose command): s3-entrypoint.sh S3_PORT FIRST_INTERNAL_PORT
# SeaweedFS runs a master, a volume server and a filer behind the S3 gateway; on the host network
# each needs a free loopback port (and its gRPC port, +10000), taken from FIRST_INTERNAL_PORT on.
set -eu
s3_port="${1:-9000}"; base="${2:-19400}"
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
cat > /tmp/s3.json <<JSON
{"identities": [{"name": "root", "credentials": [{"accessKey": "$MINIO_ROOT_USER",
  "secretKey": "$MINIO_ROOT_PASSWORD"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
mkdir -p /data
exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="$base" -master.port.grpc="$((base + 10000))" \
  -volume.port="$((base + 1))" -volume.port.grpc="$((base + 10001))" \
  -filer -filer.port="$((base + 2))" -filer.port.grpc="$((base + 10002))" \
  -s3 -s3.port="$s3_port" -s3.config=/tmp/s3.json -master.volumeSizeLimitMB=64 -volume.max=8
