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
fi

exec rasa "$@"
