# syntax=docker/dockerfile:1
# Rasa Open Source 3.6.21 with generic_connector installed: the image a Rasa team deploys.
#
#   docker build -t my-assistant .
#   docker run -p 5005:5005 -v "$PWD/models:/app/models" \
#       -v "$PWD/credentials.yml:/app/credentials.yml" --env-file .env my-assistant
#
# The assistant's own files (models/, credentials.yml, endpoints.yml) are mounted, given by
# Rasa's Helm chart, or copied in by an image built FROM this one (deploy/helm/Dockerfile
# adds the model for deploy/helm/values.yaml). `mapping: telegram` (a ready
# mapping, no path) works in credentials.yml: the ready mappings are inside the package.

# The wheel is built in a throwaway stage: the image gets the package, not its source tree.
FROM python:3.10-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY generic_connector ./generic_connector
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM rasa/rasa:3.6.21
USER root
COPY --from=wheel /wheels /tmp/wheels
# Every dependency is within the versions Rasa 3.6.21 pins, so pip keeps the image's own.
# The wheel installs both commands: generic-connector and generic-connector-healthcheck.
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && generic-connector --version && generic-connector-healthcheck --help >/dev/null
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/generic-connector-entrypoint
# Rasa's image runs as this user, in /app.
USER 1001
WORKDIR /app
EXPOSE 5005
# `run ...` checks credentials.yml (and the variables its mappings need) before rasa run
# starts; any other arguments go to rasa unchanged (train, shell, ...). Rasa's HTTP API is
# served only with a token: the entry point adds `--enable-api --auth-token "$RASA_AUTH_TOKEN"`
# when RASA_AUTH_TOKEN (or RASA_TOKEN) is set; without one, only the channels' webhooks.
ENTRYPOINT ["generic-connector-entrypoint"]
CMD ["run", "--port", "5005"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=6 \
    CMD ["generic-connector-healthcheck"]
