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

cat <<MSG

Serving the demo on http://localhost:$PORT once Rasa says "Rasa server is up and running". Try:

  curl -s -X POST http://localhost:$PORT/webhooks/myio/webhook \\
       -H 'Content-Type: application/json' \\
       -d '{"sender": "test_user", "message": "Hi there!", "metadata": {}}'

MSG
exec "$BIN/rasa" run --model "$MODEL" --credentials credentials.yml --port "$PORT" --enable-api
