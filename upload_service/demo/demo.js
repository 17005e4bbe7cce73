// The demo page: the browser flow of docs/clients.md, in plain JS (no build step).
//   1. POST /token to this page's own backend → a short-lived upload token and the API's URL
//   2. GET  {api}/v1/limits with the token      → the file input's `accept`, per-type sizes
//   3. POST {api}/v1/uploads (XHR, multipart)   → a progress bar from upload progress events;
//      a refusal shows the JSON error (code, message, request id)
//   4. GET  {api}/v1/uploads/{id}, with backoff → until `done` or `failed`
//   5. GET  {api}/v1/uploads/{id}/artifacts/thumb-256.webp?redirect=false → {url} → <img src>
'use strict';

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const session = { api: null, token: null, limits: null };

  // An error the page can show: the API's {"error": {...}} body, or one made up for status 0.
  function problem(status, body, headerRequestId) {
    const error = (body && body.error) || {};
    return {
      status,
      code: error.code || (status === 0 ? 'NETWORK_ERROR' : 'HTTP_' + status),
      message: error.message || (status === 0
        ? 'the browser gave this page no response (origin not allowed, network down, or connection cut)'
        : 'no JSON error body'),
      requestId: error.request_id || headerRequestId || '',
    };
  }

  function showProblem(box, p) {
    if ($('.code', box)) {
      $('.code', box).textContent = p.code;
      $('.message', box).textContent = p.message;
      $('.http-status', box).textContent = String(p.status);
      $('.request-id', box).textContent = p.requestId || '—';
    } else {
      box.textContent = `${p.code}: ${p.message}` + (p.requestId ? ` (request id ${p.requestId})` : '');
    }
    box.hidden = false;
  }

  async function fetchJson(url, options = {}) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw problem(response.status, body, response.headers.get('X-Request-ID'));
    return { body, response };
  }

  const authorized = () => ({ Authorization: `Bearer ${session.token}` });
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function formatBytes(n) {
    return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
  }

  async function start() {
    const box = $('#session');
    try {
      const { body: minted } = await fetchJson('token', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
      });
      session.api = minted.api;
      session.token = minted.token;
      $('#api').textContent = session.api;
      $('#token-info').textContent =
        `${minted.max_uploads} upload(s) until ${new Date(minted.expires_at).toLocaleTimeString()} (id ${minted.token_id.slice(0, 8)}…)`;
      const { body: limits } = await fetchJson(`${session.api}/v1/limits`, { headers: authorized() });
      session.limits = limits;
      $('#limits-info').textContent = limits.types.map((t) => `${t.type} ≤ ${formatBytes(t.max_bytes)}`).join(', ');
      const input = $('#file');
      input.accept = limits.accept;
      input.disabled = false;
      box.dataset.state = 'ready';
    } catch (p) {
      box.dataset.state = 'error';
      showProblem($('#session-error'), p instanceof Error ? problem(0, null, '') : p);
    }
  }

  function newCard(file) {
    const card = $('#upload-card').content.firstElementChild.cloneNode(true);
    $('.name', card).textContent = `${file.name} (${formatBytes(file.size)})`;
    $('#uploads').prepend(card);
    return card;
  }

  function setState(card, state, text) {
    card.dataset.state = state;
    $('.status', card).textContent = text || state;
  }

  // XHR, because fetch() can't report upload progress.
  function upload(file, card) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      const caption = $('#caption').value.trim();
      if (caption) form.append('caption', caption);
      form.append('file', file);
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `${session.api}/v1/uploads`);
      xhr.setRequestHeader('Authorization', `Bearer ${session.token}`);
      xhr.setRequestHeader('Idempotency-Key', crypto.randomUUID());
      xhr.responseType = 'json';
      let events = 0;
      xhr.upload.onprogress = (event) => {
        events += 1;
        card.dataset.progressEvents = String(events);
        if (event.lengthComputable) {
          const percent = Math.round((event.loaded / event.total) * 100);
          $('.progress', card).value = percent;
          $('.status', card).textContent = `uploading ${percent}%`;
        }
      };
      xhr.onload = () => {
        const requestId = xhr.getResponseHeader('X-Request-ID');
        if (xhr.status === 202) resolve(xhr.response);
        else reject(problem(xhr.status, xhr.response, requestId));
      };
      xhr.onerror = () => reject(problem(0, null, ''));
      xhr.send(form);
    });
  }

  // Poll with backoff (0.5 s × 1.5 up to 5 s), honouring Retry-After, until a final status.
  async function follow(id, card) {
    let delay = 500;
    for (;;) {
      const response = await fetch(`${session.api}/v1/uploads/${id}`, { headers: authorized() });
      const body = await response.json().catch(() => null);
      if (response.ok) {
        // `done` is shown once the thumbnail is on screen (handle() below).
        setState(card, body.status === 'done' ? 'processed' : body.status, body.status);
        if (body.status === 'done' || body.status === 'failed') return body;
      } else if (![429, 502, 503, 504].includes(response.status)) {
        throw problem(response.status, body, response.headers.get('X-Request-ID'));
      }
      const retryAfter = Number(response.headers.get('Retry-After')) * 1000;
      await sleep(retryAfter || delay);
      delay = Math.min(delay * 1.5, 5000);
    }
  }

  function showRecord(card, record) {
    card.dataset.uploadId = record.id;
    $('.upload-id', card).textContent = record.id;
    $('.detected-type', card).textContent = record.detected_type || record.declared_type || '?';
    $('.size', card).textContent = formatBytes(record.size);
    $('.sha256', card).textContent = record.sha256;
    $('.record', card).hidden = false;
  }

  async function showThumbnail(id, card) {
    // An <img> can't send a Bearer header: ask for the presigned URL instead of the redirect.
    const { body } = await fetchJson(
      `${session.api}/v1/uploads/${id}/artifacts/thumb-256.webp?redirect=false`, { headers: authorized() });
    const img = $('.thumb', card);
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(problem(0, null, '')); // an <img> error carries no details
      img.src = body.url;
    });
    img.hidden = false;
  }

  async function handle(file) {
    const card = newCard(file);
    try {
      const accepted = await upload(file, card);
      $('.progress', card).value = 100;
      showRecord(card, accepted);
      setState(card, 'queued', 'stored, queued');
      const record = await follow(accepted.id, card);
      showRecord(card, record);
      if (record.status === 'failed') {
        setState(card, 'failed');
        showProblem($('.error', card), problem(200, { error: record.error }, ''));
        return;
      }
      await showThumbnail(record.id, card);
      setState(card, 'done');
    } catch (p) {
      const shown = p instanceof Error ? problem(0, { error: { code: 'PAGE_ERROR', message: p.message } }, '') : p;
      setState(card, card.dataset.uploadId ? 'failed' : 'refused', card.dataset.uploadId ? 'failed' : `refused (${shown.status})`);
      showProblem($('.error', card), shown);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('#file').addEventListener('change', (event) => {
      const files = Array.from(event.target.files);
      event.target.value = '';
      files.forEach(handle);
    });
    start();
  });
})();
