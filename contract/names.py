"""Names on the broker, as docs/contract.md fixes them. Other teams bind to these."""

from typing import Final

#: The Celery task name of one init-selection job.
TASK_NAME: Final = "kling.init_selection"
#: Durable queue the workers consume jobs from.
JOB_QUEUE: Final = "kling.init_selection"
#: Durable topic exchange every terminal result is published to.
RESULT_EXCHANGE: Final = "kling.results"
#: Routing key prefix; the full key is ``init_selection.<status>``.
RESULT_ROUTING_PREFIX: Final = "init_selection"
#: Durable queue bound to the result exchange so no result is dropped before a consumer exists.
RESULT_QUEUE: Final = "kling.init_selection.results"
#: Binding of the default result queue: every status.
RESULT_BINDING_KEY: Final = "init_selection.*"
#: Durable queue for messages that are not a job at all, kept byte for byte.
DEAD_LETTER_QUEUE: Final = "kling.init_selection.dead"
#: Header on a dead letter that says why it was set aside.
DEAD_LETTER_REASON_HEADER: Final = "x-dead-letter-reason"


def result_routing_key(status: str) -> str:
    """The routing key a result with ``status`` is published under."""
    return f"{RESULT_ROUTING_PREFIX}.{status}"
