#!/usr/bin/env bash
# Trains the demo assistant when its data changed, then serves it with credentials.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-5005}"
BIN=.venv/bin
MODEL=demo/models/demo.tar.gz
export SQLALCHEMY_SILENCE_UBER_WARNING=1 PYTHONWARNINGS=ignore

if [ ! -f "$MODEL" ] || [ -n "$(find demo/config.yml demo/domain.yml demo/data -newer "$MODEL")" ]; then
  "$BIN/rasa" train --config demo/config.yml --domain demo/domain.yml --data demo/data \
    --out demo/models --fixed-model-name demo
fi

# Print how to talk to the assistant once /status answers 200 (409 until the model is loaded).
# This shell's pid becomes rasa's through `exec`, so the watcher stops when rasa does.
(
  until curl -sf "http://localhost:$PORT/status" >/dev/null; do
    kill -0 $$ 2>/dev/null || exit 0
    sleep 1
  done
  cat <<MSG

The demo assistant is up on http://localhost:$PORT (Ctrl-C stops it). Talk to it:

  curl -s -X POST http://localhost:$PORT/webhooks/myio/webhook \\
       -H 'Content-Type: application/json' \\
       -d '{"sender": "test_user", "message": "Hi there!", "metadata": {}}'

MSG
) &
exec "$BIN/rasa" run --model "$MODEL" --credentials credentials.yml --port "$PORT" --enable-api
