'use strict';
const test = require('node:test');
const assert = require('node:assert');
const http = require('node:http');
const app = require('../app');

function get(server, path) {
  return new Promise((resolve, reject) => {
    const { port } = server.address();
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
      })
      .on('error', reject);
  });
}

async function withServer(fn) {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    await fn(server);
  } finally {
    server.close();
  }
}

test('GET /health answers ok', () =>
  withServer(async (server) => {
    const res = await get(server, '/health');
    assert.strictEqual(res.status, 200);
    assert.deepStrictEqual(res.body, { status: 'ok' });
  }));

test('GET / names the service', () =>
  withServer(async (server) => {
    const res = await get(server, '/');
    assert.strictEqual(res.status, 200);
    assert.strictEqual(res.body.service, '{{NAME}}');
  }));
