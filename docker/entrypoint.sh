#!/bin/sh
# Entry point of the assistant's image (and usable outside one, with rasa and
# generic-connector on PATH).
#
#   run [rasa run options]   check the credentials file rasa run will read, with the
#                            environment variables its generic channels need, then exec
#                            rasa run with the same options
#   anything else            exec rasa with those arguments (train, shell, run actions, ...)
#
# A broken credentials file stops here with one line per problem (file:line:column: key:
# message (hint)) and exit status 1; GENERIC_CONNECTOR_VALIDATE=0 skips the check.
#
# Rasa's HTTP API (models, conversations, tracker events: --enable-api) is served only with a
# token. With RASA_AUTH_TOKEN (or RASA_TOKEN) set and not empty, `run` gets
# `--enable-api --auth-token "$RASA_AUTH_TOKEN"` (options it already has are not repeated);
# without one, rasa run serves the channels' webhooks and no API. An explicit --enable-api
# without a token is passed on, with a warning on stderr.
set -eu

if [ "${1:-}" = "run" ] && [ "${2:-}" != "actions" ]; then
  credentials=""
  previous=""
  for arg in "$@"; do
    if [ "$previous" = "--credentials" ]; then credentials="$arg"; fi
    case "$arg" in --credentials=*) credentials="${arg#--credentials=}" ;; esac
    previous="$arg"
  done
  # As rasa run: the file given when it exists, else credentials.yml.
  if [ -z "$credentials" ] || [ ! -f "$credentials" ]; then credentials="credentials.yml"; fi
  if [ "${GENERIC_CONNECTOR_VALIDATE:-1}" != "0" ] && [ -f "$credentials" ]; then
    if ! generic-connector validate --check-env "$credentials"; then
      echo "entrypoint: $credentials is not valid, so rasa run is not started" >&2
      exit 1
    fi
  fi

  token="${RASA_AUTH_TOKEN:-${RASA_TOKEN:-}}"
  has_api=""
  has_token=""
  for arg in "$@"; do
    case "$arg" in
      --enable-api) has_api=1 ;;
      --auth-token | --auth-token=*) has_token=1 ;;
    esac
  done
  if [ -n "$token" ]; then
    if [ -z "$has_api" ]; then set -- "$@" --enable-api; fi
    if [ -z "$has_token" ]; then set -- "$@" --auth-token "$token"; fi
  elif [ -n "$has_api" ] && [ -z "$has_token" ]; then
    echo "entrypoint: rasa run --enable-api without --auth-token: Rasa's HTTP API is open" \
      "to anyone who reaches the port (set RASA_AUTH_TOKEN)" >&2
  fi
fi

exec rasa "$@"
