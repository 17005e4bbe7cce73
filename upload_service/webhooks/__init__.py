"""Webhooks: signed events about uploads, written to an outbox in the transaction of the change
they report and delivered at least once by a dispatcher (docs/webhooks.md).

- ``events``: the event types, their JSON bodies and the Standard Webhooks signature (pure);
- ``secretbox``: endpoint secrets encrypted at rest with the operator's keys;
- ``outbox``: the one function status changes call to record an event in their transaction;
- ``http``: the outbound POST (timeouts, no redirects, capped reads, refused private targets);
- ``dispatcher``: claims due deliveries, sends, retries with backoff, marks dead;
- ``admin``: endpoints and deliveries for the CLI and the API.
"""
