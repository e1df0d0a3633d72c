"""The Responses API (``/responses``) in background mode: wire models, endpoints, stream events,
and the driving of one response chain through tool rounds.

Modules: ``wire`` (msgspec structs of responses, output items, request bodies), ``events`` (the
SSE events with ``sequence_number``), ``client`` (``ResponsesClient``: create, retrieve, cancel,
stream and stream resume on the shared ``Transport``), ``session`` (the protocol seam the run
loop drives), ``loop`` (following a chain to its end).
"""
