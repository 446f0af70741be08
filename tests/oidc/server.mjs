// A real OAuth 2.0 / OpenID Connect authorization server for the engine's
// integration tests: oidc-provider (panva) with two fake confidential clients,
// short-lived access tokens, refresh-token rotation, the development
// login/consent forms, and a tiny protected resource at GET /api/me.
//
//   node server.mjs --port PORT [--redirect-uri URL]... [--ttl SECONDS] [--require-pkce]
//
// Prints `ready http://127.0.0.1:PORT` on stdout once it is listening. See README.md.

import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const USAGE = 'usage: node server.mjs --port PORT [--redirect-uri URL]... [--ttl SECONDS] [--require-pkce]';

function fail(message) {
  process.stderr.write(`oidc server: ${message}\n${USAGE}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true, default: [] },
      ttl: { type: 'string', default: '2' },
      'require-pkce': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(err.message);
}

// The issuer is built from the port, so the port is chosen before listening: never 0.
const port = Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  fail(`--port must be an integer in 1..65535, got ${JSON.stringify(args.port)}`);
}
const ttl = Number(args.ttl);
if (!Number.isInteger(ttl) || ttl < 1) {
  fail(`--ttl must be a positive integer (seconds), got ${JSON.stringify(args.ttl)}`);
}

const issuer = `http://127.0.0.1:${port}`;
const redirectUris = args['redirect-uri'].length > 0
  ? args['redirect-uri']
  : ['http://127.0.0.1/callback'];

const common = {
  // `native` (RFC 8252 section 7.3): a loopback http redirect_uri matches on any
  // port, so a CLI's callback listener may use an ephemeral port; the scheme,
  // host and path must still match one of these exactly.
  application_type: 'native',
  grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: redirectUris,
  scope: 'openid offline_access api',
};

const configuration = {
  clients: [
    {
      ...common,
      client_id: 'basic-client',
      client_secret: 'basic-secret',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      ...common,
      client_id: 'post-client',
      client_secret: 'post-secret',
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  // `api` must be a known scope or it is silently dropped from every token.
  scopes: ['openid', 'offline_access', 'api'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: ttl,
    ClientCredentials: ttl,
    AuthorizationCode: 60,
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    IdToken: 3600,
  },
  // Every refresh rotates the refresh token; presenting a consumed one revokes the grant.
  rotateRefreshToken: true,
  // Default (optional for confidential clients, S256 only, verified when a
  // code_challenge was sent), or mandatory with --require-pkce.
  pkce: { required: () => args['require-pkce'] },
  // The default tolerance (15 s) keeps expired tokens valid for token lookups
  // (Model.find, hence /api/me); the tests want real 2-second tokens.
  clockTolerance: 0,
  cookies: { keys: ['engine-tests-oidc-cookie-key-not-a-secret'] },
};

const provider = new Provider(issuer, configuration);

// Surface the reasons behind 4xx/5xx answers on stderr, for test failure messages.
for (const event of ['grant.error', 'server_error', 'authorization.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (_ctx, err) => {
    const description = [err.error_description, err.error_detail].filter(Boolean).join(': ');
    process.stderr.write(`oidc server: ${event}: ${err.name}: ${err.message}${description ? ` (${description})` : ''}\n`);
  });
}

// GET /api/me: a protected resource that accepts the provider's opaque access
// tokens (authorization-code and client-credentials ones alike).
async function apiMe(req, res) {
  const send = (status, body, extraHeaders = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...extraHeaders });
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'GET') {
    send(405, { error: 'method_not_allowed' }, { allow: 'GET' });
    return;
  }
  const match = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
  const unauthorized = () => send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
  if (!match) {
    unauthorized();
    return;
  }
  const value = match[1];
  // find() returns undefined for unknown, expired and revoked tokens.
  const token = (await provider.AccessToken.find(value)) ?? (await provider.ClientCredentials.find(value));
  if (!token || token.isExpired) {
    unauthorized();
    return;
  }
  send(200, {
    sub: token.accountId ?? null,
    client_id: token.clientId,
    scope: token.scope ?? null,
  });
}

// oidc-provider accepts client_secret_basic and client_secret_post
// interchangeably whatever a client registered. The tests must catch an engine
// that authenticates the wrong way, so this enforces each client's registered
// method on the endpoints that authenticate clients.
const authMethods = new Map(configuration.clients.map((c) => [c.client_id, c.token_endpoint_auth_method]));
const clientAuthPaths = new Set(['/token', '/token/introspection', '/token/revocation']);

function basicClientId(header) {
  const match = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, '%20'));
  } catch {
    return undefined;
  }
}

async function enforceClientAuthMethod(req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  // Hand the body over to oidc-provider, which reads req.body once the stream is consumed.
  req.body = raw;
  const form = new URLSearchParams(raw);
  let clientId;
  let used;
  if (req.headers.authorization !== undefined) {
    clientId = basicClientId(req.headers.authorization);
    used = 'client_secret_basic';
  } else if (form.has('client_secret')) {
    clientId = form.get('client_id');
    used = 'client_secret_post';
  }
  const registered = authMethods.get(clientId);
  if (used === undefined || registered === undefined || registered === used) {
    return true;
  }
  process.stderr.write(`oidc server: ${clientId} authenticated with ${used}, registered ${registered}\n`);
  const headers = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (used === 'client_secret_basic') {
    headers['www-authenticate'] = `Basic realm="${issuer}", error="invalid_client"`;
  }
  res.writeHead(401, headers);
  res.end(JSON.stringify({
    error: 'invalid_client',
    error_description: `client authentication failed (${clientId} is registered for ${registered}, the request used ${used})`,
  }));
  return false;
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (req.method === 'POST' && clientAuthPaths.has(path)) {
    enforceClientAuthMethod(req, res).then((pass) => {
      if (pass) callback(req, res);
    }, (err) => {
      process.stderr.write(`oidc server: ${path}: ${err.stack ?? err}\n`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'server_error' }));
    });
    return;
  }
  if (path === '/api/me') {
    apiMe(req, res).catch((err) => {
      process.stderr.write(`oidc server: /api/me: ${err.stack ?? err}\n`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'server_error' }));
    });
    return;
  }
  callback(req, res);
});

server.on('error', (err) => {
  process.stderr.write(`oidc server: cannot listen on 127.0.0.1:${port}: ${err.message}\n`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
