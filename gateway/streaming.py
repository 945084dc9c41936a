"""Streaming calls: an executor's events (`/stream`: a transcript's segments, denoising steps,
previews, images) as they come, one executor at a time.

Jina's own streaming reaches only a Flow's first executor and carries no request parameters.
The gateway streams to each executor by name through its connection pool instead (the private
part in `gateway.jina_internals`), with the request's parameters — its deadline and caller from
Admission — in the document as JSON. As for a call of the whole Flow, a replica that answers
Busy, or cannot be reached, before its first event is skipped for the next one; a stream closed
early (its client went away) cancels its RPC, and the replica stops the work at its next step.
"""

import contextlib
import json
import time
import uuid
from typing import AsyncIterator, Optional

from jina.excepts import InternalNetworkError
from jina.types.request.data import SingleDocumentRequest

from gateway.jina_internals import SkippingReplicas, replica_count, replicas_of, stream_to
from speech2image.api.openai import executor_error
from speech2image.errors import Busy, Unavailable, unanswered
from speech2image.schema import STREAM_ERROR, TRANSCRIPT_DONE, SpeechImageDoc
from speech2image.serving.deadline import PARAMETER as DEADLINE

ENDPOINT = "/stream"
ENDINGS = (None, TRANSCRIPT_DONE)  # an executor's last event: its document (Whisper's: the transcript)
EXECUTORS = ("whisper", "diffusion")  # a Flow's executors, in order
RPC_MARGIN_SECONDS = 5.0  # past the request's deadline, when the replica has said why it stopped


async def pipeline(admission, doc: SpeechImageDoc, parameters: dict, executors: tuple[str, ...] = EXECUTORS, *,
                   caller: Optional[str] = None, client_seconds: Optional[float] = None):
    """A streaming call's events (event documents) through each of `executors` in turn, the
    document the first ends with going on to the next; one deadline and caller for all
    (Admission's, from the client's `parameters` and time)."""
    request_id = uuid.uuid4().hex
    admitted = admission.admit(parameters, client_seconds, caller)
    try:
        for executor in executors:
            ended = None
            async with contextlib.aclosing(stream(admission.pool, executor, doc, admitted, request_id)) as answers:
                async for event in answers:
                    if event.event in ENDINGS:
                        ended = event
                    yield event
            doc = ended.model_copy(update={"event": None})
    finally:
        admission.cancel(request_id)  # whatever RPC of the request still runs (nothing, when it ended)


async def stream(pool, deployment: str, doc: SpeechImageDoc, parameters: dict,
                 request_id: str) -> AsyncIterator[SpeechImageDoc]:
    """The events of `doc` through executor `deployment`, with `parameters` (Admission's: the
    deadline and caller filled); an error event is raised as the project's error."""
    replicas = replicas_of(pool, deployment, True, None)
    if not replicas:
        raise Unavailable(f"the {deployment} executor has no replica to answer; try again when it is ready")
    untried = SkippingReplicas(replicas)
    sent = doc.model_copy(update={"stream_parameters": json.dumps(addressed_to(deployment, parameters))})
    timeout = max(1.0, parameters.get(DEADLINE, time.time()) - time.time()) + RPC_MARGIN_SECONDS
    for tries_left in reversed(range(replica_count(replicas))):
        request = SingleDocumentRequest()
        request.header.exec_endpoint = ENDPOINT
        request.header.request_id = request_id
        request.document_cls = SpeechImageDoc
        request.data.doc = sent
        answered = ended = False
        answers = stream_to(pool, request, untried, endpoint=ENDPOINT, timeout=timeout)
        try:
            async for response, _ in answers:
                if isinstance(response, BaseException):
                    if not answered and tries_left and _unreachable(response):
                        break  # before any event: the next replica
                    raise Unavailable(unanswered(f"the {deployment} executor"))
                response.document_cls = SpeechImageDoc
                event = response.doc
                if event.event == STREAM_ERROR:
                    error = executor_error(event.error, event.error_args)
                    if not answered and tries_left and isinstance(error, Busy):
                        break  # refused before any work: the next replica
                    raise error
                answered, ended = True, event.event in ENDINGS
                yield event
            else:
                if ended:
                    return
                if answered or not tries_left:  # the call stopped without its end: the replica went away
                    raise Unavailable(unanswered(f"the {deployment} executor"))
        finally:
            await answers.aclose()  # however it ends, the RPC ends with it
        untried.skipped.add(untried.last)


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, InternalNetworkError) or "UNAVAILABLE" in str(getattr(error, "code", lambda: "")())


def addressed_to(executor: str, parameters: dict) -> dict:
    """The parameters one executor reads, as Jina hands them to it: those for every executor, and
    its own (`whisper__language` → `language`)."""
    own = {key.split("__", 1)[1]: value for key, value in parameters.items() if key.startswith(f"{executor}__")}
    return {**{key: value for key, value in parameters.items() if "__" not in key}, **own}
