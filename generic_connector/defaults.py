"""Every default of a channel's configuration, in one place (the schema's texts quote them)."""

# limits
MAX_BODY = 1_048_576  # bytes
READ_TIMEOUT = 10.0  # seconds to receive the whole body
MAX_CONCURRENT = 256  # requests a channel handles at once; more are answered 503
# When a channel is full, a request still waiting for its body after this many seconds gives
# its place to a new one (408).
SLOW_BODY_PATIENCE = 1.0
# Above the largest batch a documented platform sends (Meta's webhooks: up to 1,000 updates).
MAX_EVENTS = 2_000
MAX_FORM_FIELDS = 1_000

# idempotency
IDEMPOTENCY_WINDOW = 3600.0  # seconds
IDEMPOTENCY_MAX_KEYS = 100_000

# store: shared state for several replicas
STORE = "memory"
STORE_PREFIX = "generic_connector"
VISIBILITY_TIMEOUT = 30.0  # seconds before a dead replica's pending deliveries are taken over
RUNNING_TIMEOUT = 30.0  # seconds before a dead replica's claim of a message id expires

# outbound
OUTBOUND_TIMEOUT = 10.0
OUTBOUND_RETRIES = 3
OUTBOUND_BACKOFF = 0.5
OUTBOUND_MAX_BACKOFF = 30.0
# The longest wait a platform's Retry-After header is followed for (outbound, fetch).
MAX_RETRY_AFTER = 120.0
# Bytes of a success's body read before its connection is closed instead of read on: nothing
# uses it, and a platform (or a host it redirects DNS to) must not make us read 300 MB.
MAX_DRAINED = 65_536

# fetch before mapping
FETCH_TIMEOUT = 5.0  # seconds per attempt
FETCH_RETRIES = 2
FETCH_BACKOFF = 0.2  # seconds after the first failed attempt, doubling
FETCH_MAX_BACKOFF = 2.0
FETCH_MAX_ANSWER = 1_048_576  # bytes: a fetched message, not a download; larger is refused

# conversations
REPLY_TO_TTL = 30 * 86_400.0  # seconds a conversation's reply address is remembered

# kinds a platform cannot show (outbound.renders)
NUMBERED = "{n}. {title}"  # a button as a line of text
OFFERED_TTL = 86_400.0  # seconds the buttons offered as numbered text are remembered
PRESENCE_TIMEOUT = 3.0  # seconds for a presence request (typing, read): one attempt
MAX_ATTACHMENT = 1_048_576  # bytes of a downloaded attachment kept in metadata (base64)
