#!/usr/bin/env bash
# The demo: the example app secured by asgi-apim with mutual TLS, a development
# PKI, and the curl lines that exercise it. Ctrl-C stops it; --no-wait exits
# after the curl lines.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8443}
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }  # something answers there
if port_taken "$port"; then
  echo "demo: port $port on 127.0.0.1 is already in use; stop what listens there, or run PORT=8444 bash scripts/demo.sh" >&2
  exit 1
fi
py=$(bash scripts/setup.sh | tail -n 1)
bin="$(dirname "$(command -v "$py")")"
export PATH="$bin:$PATH"
certs=example_app/certs
[ -f $certs/ca.pem ] || asgi-apim pki init $certs >/dev/null
echo "== development PKI in $certs"
asgi-apim serve example_app.main:app --config example_app/deployment.toml --port "$port" \
  --ssl-certfile $certs/server.pem --ssl-keyfile $certs/server.key --no-access-log &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT  # the server ends by SIGTERM: not the demo's status
up=
for _ in $(seq 100); do
  if ! kill -0 $server 2>/dev/null; then break; fi  # it could not start (the port was taken meanwhile, say)
  if curl -s --cacert $certs/ca.pem "https://127.0.0.1:$port/health" >/dev/null; then up=1; break; fi
  sleep 0.2
done
if [ -z "$up" ]; then
  echo "demo: asgi-apim serve did not come up on https://127.0.0.1:$port (see its messages above); nothing was run" >&2
  exit 1
fi

run() { echo; echo "\$ $*"; "$@"; echo; }
run curl -s --cacert $certs/ca.pem "https://127.0.0.1:$port/health"
run curl -s --cacert $certs/ca.pem --cert $certs/client.pem --key $certs/client.key "https://127.0.0.1:$port/pets/whoami"
run curl -s --cacert $certs/ca.pem --cert $certs/client.pem --key $certs/client.key "https://127.0.0.1:$port/pets/1"
run curl -s -i --cacert $certs/ca.pem "https://127.0.0.1:$port/pets/whoami"
run curl -s --cacert $certs/ca.pem --cert $certs/client.pem --key $certs/client.key "https://127.0.0.1:$port/nothing-here"
run asgi-apim check --config example_app/deployment.toml $certs/client.pem
if [ "${1:-}" != "--no-wait" ]; then
  echo "== serving https://127.0.0.1:$port (Ctrl-C to stop)"
  wait $server
fi
