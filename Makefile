# `make demo` serves the demo assistant; `make test` runs the whole test suite (`make test-fast`
# its unit tier).
# Both set up .venv first (Python 3.8-3.10, Rasa Open Source 3.6.21, this project).
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5005

.PHONY: setup demo test test-fast bench profile lint format docs

setup:
	@./scripts/setup.sh

demo: setup
	@./scripts/demo.sh $(PORT)

test: setup
	$(BIN)/mypy && $(BIN)/lint-imports
	$(BIN)/generic-connector validate --strict mappings/ credentials.yml
	$(BIN)/python -m pytest

# The inner loop: the unit tier (no redis-server, no rasa process), a few Hypothesis examples.
test-fast: setup
	$(BIN)/python -m pytest -m unit -q

# Side-by-side HTTP benchmark: Rasa's own connectors against the generic channels with the
# shipped mappings (Telegram, Slack, Twilio, Messenger, Mattermost, Rocket.Chat; replies to a
# stand-in platform API), RestInput against rest.yml, in paired rounds with the stand-in
# agent, then through a real rasa run; telegram.yml on the Redis store against in memory, and
# acknowledged early under a fixed rate; the mapping micro-benchmark; memory with one and ten
# channels. Needs wrk (installed from Debian's packages if missing) and redis-server (setup).
bench: setup
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python bench/run.py --rasa
	$(BIN)/python bench/store.py
	$(BIN)/python bench/mappings.py
	$(BIN)/python bench/memory.py

# Where a request's time goes: py-spy samples the benchmark server under wrk load. The default
# route is telegram.yml delivering its replies to the stand-in Bot API (the outbound path).
ROUTE ?= telegram-api
profile: setup
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	@test -x $(BIN)/py-spy || uv pip install --quiet -p $(BIN)/python -e '.[bench]'
	$(BIN)/python bench/profile_server.py $(ROUTE)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d site

# The docs site (docs/, mkdocs.yml), built into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
