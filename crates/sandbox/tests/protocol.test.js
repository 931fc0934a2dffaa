// The warm-server protocol's golden fixtures (../protocol/*.json) against warm_node.js:
// `node --test crates/sandbox/tests/`.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const CRATE = path.join(__dirname, '..');
const server = require(path.join(CRATE, 'src', 'warm_node.js'));
const fixture = (name) => JSON.parse(fs.readFileSync(path.join(CRATE, 'protocol', name), 'utf8'));
const REQUESTS = fixture('requests.json').cases;
const FRAMES = fixture('frames.json').frames;
const FROM_NODE = FRAMES.filter((f) => f.from.includes('node'));

const blobsOf = (f) => f.blobs.map((b) => Buffer.from(b));
const withoutBlobs = (header) => {
  const h = { ...header };
  delete h.blobs;
  return h;
};

/** An fd that reads `data`, then end of file. */
function readable(data) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coval-protocol-'));
  const file = path.join(dir, 'in');
  fs.writeFileSync(file, data);
  const fd = fs.openSync(file, 'r');
  fs.rmSync(dir, { recursive: true });
  return fd;
}

test('the server is required without serving', () => {
  assert.equal(typeof server.invalid, 'function');
  assert.equal(console.log === console.error, false);
});

for (const c of REQUESTS) {
  test(`request ${c.name} is accepted or refused as the fixture says`, () => {
    assert.equal(server.invalid(c.request), c.node);
  });
}

test('request lines parse into the fixtures', () => {
  const fd = readable(REQUESTS.map((c) => JSON.stringify(c.request) + '\n').join(''));
  try {
    for (const c of REQUESTS) assert.deepEqual(server.readRequest(fd), c.request);
    assert.equal(server.readRequest(fd), null);
  } finally {
    fs.closeSync(fd);
  }
});

for (const f of FROM_NODE) {
  test(`frame ${f.name} is written as the fixture`, () => {
    const data = server.frame(withoutBlobs(f.header), blobsOf(f));
    const nl = data.indexOf(10);
    assert.deepEqual(JSON.parse(data.subarray(0, nl).toString('utf8')), f.header);
    assert.deepEqual(data.subarray(nl + 1), Buffer.concat(blobsOf(f)));
  });
}

for (const f of FROM_NODE.filter((f) => f.inputs)) {
  test(`reply ${f.name} is built as the fixture`, () => {
    const i = f.inputs;
    const facts = {
      timedOut: i.timed_out,
      overCap: i.over_cap,
      total: i.total,
      oom: i.oom,
      files: i.files,
      clean: i.clean,
      seconds: i.seconds,
      marks: i.marks,
    };
    const want = withoutBlobs(f.header);
    assert.deepEqual(server.replyHeader(f.header.id, { code: i.exit, signal: i.signal }, facts), want);
    if (i.exit === null && i.signal === 9) {
      // A run the server stopped (no status) is reported as killed by SIGKILL.
      assert.deepEqual(server.replyHeader(f.header.id, null, facts), want);
    }
  });
}
