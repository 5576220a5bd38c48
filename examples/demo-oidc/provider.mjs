// DEMO ONLY: an OpenID Provider for the fictional Northmoor and Ashdale ICS, so that the broker's
// IG console can be tried and tested with a real OpenID Connect login. The users, passwords,
// client secrets and cookie keys below are published demo values; the signing key is generated
// afresh at every start. Never run this anywhere but on a developer's or CI's own machine.
//
//   node examples/demo-oidc/provider.mjs [--port 8090] [--issuer URL] [--console-base URL]
//
// Environment (the command-line options win): PORT, ISSUER, CONSOLE_BASE, OIDC_TEST_HOOKS=1.
// See README.md beside this file.

import { generateKeyPairSync, randomBytes, createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    'console-base': { type: 'string' },
  },
});

const PORT = Number(args.port ?? process.env.PORT ?? 8090);
const ISSUER = stripSlash(args.issuer ?? process.env.ISSUER ?? `http://127.0.0.1:${PORT}`);
const CONSOLE_BASE = stripSlash(args['console-base'] ?? process.env.CONSOLE_BASE ?? 'http://127.0.0.1:8080');
const TEST_HOOKS = process.env.OIDC_TEST_HOOKS === '1';
const HOST = process.env.HOST ?? '127.0.0.1'; // loopback only: this is a demo

function stripSlash(url) {
  return url.replace(/\/+$/, '');
}

// ---------------------------------------------------------------------------------------------
// Users (fictional) and clients (demo secrets)
// ---------------------------------------------------------------------------------------------

const { users } = JSON.parse(readFileSync(new URL('./users.json', import.meta.url), 'utf8'));
const usersBySub = new Map(users.map((u) => [u.sub, u]));
const usersByName = new Map(users.map((u) => [u.username, u]));

// Both demo clients are first-party: consent is recorded automatically, no consent page.
const FIRST_PARTY = new Set(['vpr-console', 'vpr-console-pkjwt', 'other-app']);

const SUPPORTED_SCOPES = ['openid', 'profile', 'email', 'vpr'];

const clients = [
  {
    client_id: 'vpr-console',
    client_name: 'VPR broker IG console (demo)',
    client_secret: 'demo-only-console-secret-not-for-production',
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
    redirect_uris: [`${CONSOLE_BASE}/console/callback`],
    post_logout_redirect_uris: [`${CONSOLE_BASE}/console/signed-out`],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: 'RS256',
  },
  {
    // The console authenticating with private_key_jwt instead of a secret: its assertion is
    // signed with the broker's own key, which this provider reads from the broker's JWKS.
    client_id: 'vpr-console-pkjwt',
    client_name: 'VPR broker IG console, private_key_jwt (demo)',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks_uri: `${CONSOLE_BASE}/.well-known/jwks.json`,
    redirect_uris: [`${CONSOLE_BASE}/console/callback`],
    post_logout_redirect_uris: [`${CONSOLE_BASE}/console/signed-out`],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: 'RS256',
  },
  {
    // Exists so that tests can obtain a code or an ID token issued to a different client.
    client_id: 'other-app',
    client_name: 'Another demo application (tests only)',
    client_secret: 'demo-only-other-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: [`${CONSOLE_BASE}/console/callback`],
    post_logout_redirect_uris: [`${CONSOLE_BASE}/console/signed-out`],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: 'RS256',
  },
];

// A fresh RS256 signing key at every start (RS256 is what openidconnect's ID token verifier
// accepts without further configuration). Relying parties pick it up from jwks_uri.
function generateSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
  return { ...jwk, kid: `demo-only-${kid}`, alg: 'RS256', use: 'sig' };
}

// ---------------------------------------------------------------------------------------------
// Pages (no external resources, no script except the logout auto-submit)
// ---------------------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

const STYLE = `
  body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#212b32}
  .demo{background:#fff3cd;border:1px solid #c9a227;padding:.5rem .75rem;font-size:.9rem}
  label{display:block;margin-top:1rem;font-weight:600}
  input{display:block;width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;margin-top:.25rem}
  button{margin-top:1.25rem;padding:.6rem 1.2rem;font-size:1rem;cursor:pointer}
  .error{border-left:5px solid #d5281b;padding:.5rem .75rem;color:#d5281b;font-weight:600}
  .secondary{background:none;border:none;text-decoration:underline;padding:0;margin-left:1rem}`;

function page({ title, body }) {
  return `<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} – Northmoor and Ashdale ICS sign-in (demo)</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<p class="demo" role="note">DEMO ONLY – fictional Northmoor and Ashdale ICS sign-in service. Do not enter real credentials.</p>
${body}
</main>
</body>
</html>`;
}

function csp(scriptNonce) {
  const script = scriptNonce ? `'nonce-${scriptNonce}'` : "'none'";
  return `default-src 'none'; style-src 'unsafe-inline'; script-src ${script}; base-uri 'none'; frame-ancestors 'none'`;
}

function sendHtml(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Security-Policy', csp());
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.end(html);
}

function loginPage({ uid, clientName, username = '', error }) {
  const errorHtml = error
    ? `<p class="error" id="login-error" role="alert">${esc(error)}</p>`
    : '';
  return page({
    title: error ? 'Error: Sign in' : 'Sign in',
    body: `<h1>Sign in</h1>
<p>to continue to <strong>${esc(clientName)}</strong></p>
${errorHtml}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off" novalidate>
  <label for="username">Username</label>
  <input id="username" name="username" type="text" value="${esc(username)}" required autocapitalize="none" spellcheck="false"${error ? ' aria-describedby="login-error"' : ''}${username ? '' : ' autofocus'}>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required${username ? ' autofocus' : ''}>
  <button id="sign-in" type="submit">Sign in</button>
  <button id="cancel" class="secondary" type="submit" formaction="/interaction/${esc(uid)}/abort">Cancel</button>
</form>`,
  });
}

function errorPage(title, message) {
  return page({
    title,
    body: `<h1>${esc(title)}</h1><p id="error" role="alert">${esc(message)}</p>`,
  });
}

// ---------------------------------------------------------------------------------------------
// oidc-provider configuration
// ---------------------------------------------------------------------------------------------

const configuration = {
  clients,
  jwks: { keys: [generateSigningKey()] },

  async findAccount(ctx, sub) {
    const user = usersBySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      // Everything the user has; oidc-provider releases only what the granted scopes map to
      // (see `claims` below).
      async claims() {
        return {
          sub: user.sub,
          name: user.name,
          preferred_username: user.username,
          email: user.email,
          email_verified: true,
          ods_code: user.ods_code,
          console_role: user.console_role,
        };
      },
    };
  },

  // scope -> claims it releases. `vpr` is this demo's custom scope.
  claims: {
    // protocol claims oidc-provider puts in the ID token when present (its defaults)
    acr: null, sid: null, auth_time: null, iss: null,
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    vpr: ['ods_code', 'console_role'],
  },
  scopes: SUPPORTED_SCOPES,

  // Put the claims of the granted scopes into the ID token itself, not only into userinfo.
  conformIdTokenClaims: false,

  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
  pkce: { methods: ['S256'], required: () => true }, // every client, confidential ones too
  allowOmittingSingleRegisteredRedirectUri: false,
  clientBasedCORS: () => false, // the console talks to this server from its back end only

  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },

  cookies: {
    keys: ['demo-only-cookie-key-not-for-production'],
    // Lax rather than the default None: browsers drop SameSite=None cookies that are not Secure,
    // and this demo runs on plain http on loopback.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },

  // Library defaults, spelled out (the ID token lives one hour).
  ttl: {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    Session: 14 * 24 * 60 * 60,
    Grant: 14 * 24 * 60 * 60,
  },

  features: {
    devInteractions: { enabled: false }, // our own login page below checks passwords
    rpInitiatedLogout: {
      enabled: true,
      // Confirmation is automatic: the page submits itself; without JavaScript the user presses
      // the button (#logout-confirm).
      async logoutSource(ctx, form) {
        const nonce = randomBytes(16).toString('base64');
        ctx.set('Content-Security-Policy', csp(nonce));
        ctx.type = 'html';
        ctx.body = page({
          title: 'Signing out',
          body: `<h1>Signing out</h1>
${form}
<p>You are being signed out of the Northmoor and Ashdale ICS sign-in service.</p>
<button id="logout-confirm" type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script nonce="${nonce}">document.getElementById('logout-confirm').click();</script>`,
        });
      },
      async postLogoutSuccessSource(ctx) {
        ctx.set('Content-Security-Policy', csp());
        ctx.type = 'html';
        ctx.body = page({
          title: 'Signed out',
          body: '<h1 id="logged-out">You are signed out</h1><p>You can close this window.</p>',
        });
      },
    },
  },

  async renderError(ctx, out) {
    ctx.set('Content-Security-Policy', csp());
    ctx.type = 'html';
    ctx.body = page({
      title: 'Sign-in error',
      body: `<h1>Sign-in error</h1>
<p id="error" role="alert"><code>${esc(out.error)}</code>${out.error_description ? `: ${esc(out.error_description)}` : ''}</p>`,
    });
  },
};

const provider = new Provider(ISSUER, configuration);

provider.on('server_error', (ctx, err) => {
  console.error('oidc-provider server_error', err);
});

// ---------------------------------------------------------------------------------------------
// Interactions: login (password against users.json) and automatic first-party consent
// ---------------------------------------------------------------------------------------------

function passwordMatches(given, expected) {
  // Constant-time comparison of digests, so neither length nor content leaks by timing.
  const a = createHash('sha256').update(String(given)).digest();
  const b = createHash('sha256').update(String(expected)).digest();
  return timingSafeEqual(a, b);
}

function requestedScopes(params) {
  const requested = new Set(String(params.scope ?? '').split(' '));
  return SUPPORTED_SCOPES.filter((s) => requested.has(s));
}

async function autoGrant(details, accountId) {
  const { params, grantId, prompt } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  const missing = prompt?.name === 'consent' ? prompt.details : {};
  grant.addOIDCScope(['openid', ...requestedScopes(params), ...(missing.missingOIDCScope ?? [])].join(' '));
  if (missing.missingOIDCClaims?.length) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function readForm(req, limit = 16 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function showInteraction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction session id mismatch');
  const { prompt, params, session } = details;
  const client = await provider.Client.find(params.client_id);

  if (prompt.name === 'login') {
    return sendHtml(res, 200, loginPage({ uid, clientName: client?.clientName ?? params.client_id }));
  }
  if (prompt.name === 'consent' && FIRST_PARTY.has(params.client_id) && session?.accountId) {
    const grantId = await autoGrant(details, session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return sendHtml(res, 403, errorPage('Consent not available',
    'This demo sign-in service only serves its own first-party clients.'));
}

async function submitLogin(req, res, uid) {
  const form = await readForm(req);
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction session id mismatch');
  const { prompt, params } = details;
  if (prompt.name !== 'login') {
    return sendHtml(res, 400, errorPage('Sign-in error', 'This sign-in step is already complete.'));
  }

  const username = (form.get('username') ?? '').trim();
  const password = form.get('password') ?? '';
  const user = usersByName.get(username);
  // Compare against something even for an unknown user, so both fail the same way.
  const ok = passwordMatches(password, user ? user.password : randomBytes(16).toString('hex')) && !!user;
  if (!ok) {
    const client = await provider.Client.find(params.client_id);
    return sendHtml(res, 200, loginPage({
      uid,
      clientName: client?.clientName ?? params.client_id,
      username,
      error: 'The username or password is incorrect.',
    }));
  }

  const result = { login: { accountId: user.sub, amr: ['pwd'] } };
  if (FIRST_PARTY.has(params.client_id)) {
    // Record consent now, so the browser goes straight back to the client after login.
    const existing = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    const grantId = await autoGrant(
      { ...details, grantId: existing?.accountId === user.sub ? existing.jti : undefined },
      user.sub,
    );
    result.consent = { grantId };
  }
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

async function abortInteraction(req, res, uid) {
  await readForm(req);
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction session id mismatch');
  return provider.interactionFinished(req, res, {
    error: 'access_denied',
    error_description: 'End-User cancelled the sign-in',
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------------------------
// Test hooks (only with OIDC_TEST_HOOKS=1): tamper with the next ID token from the token endpoint
// ---------------------------------------------------------------------------------------------

let nextIdToken = {}; // { aud?: string|string[], nonce?: string }

if (TEST_HOOKS) {
  // oidc-provider signs every ID token through IdToken#issue, which takes the audience from
  // `this.client.clientId` (a claim of the same name set on the token is overwritten). So for an
  // armed hook the token is issued with a view of the client whose clientId is the test's value;
  // everything else (signing key, alg, issuer, claims) is the real client's.
  const { issue } = provider.IdToken.prototype;
  provider.IdToken.prototype.issue = async function issueWithTestHooks(options = {}) {
    if (options.use === 'idtoken' && this.ctx?.oidc?.route === 'token' && Object.keys(nextIdToken).length) {
      const hook = nextIdToken;
      nextIdToken = {};
      if (hook.aud !== undefined) {
        const real = this.client;
        this.client = new Proxy(real, {
          get(target, prop) {
            if (prop === 'clientId') return hook.aud;
            const value = Reflect.get(target, prop, target);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        });
      }
      if (hook.nonce !== undefined) this.set('nonce', hook.nonce);
      console.log(`test hook: ID token issued with ${JSON.stringify(hook)}`);
    }
    return issue.call(this, options);
  };
}

async function testHook(req, res, path) {
  const send = (status, body) => {
    res.statusCode = status;
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('Cache-Control', 'no-store');
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'POST') return send(405, { error: 'use POST' });
  const form = await readForm(req);
  switch (path) {
    case '/test/next-id-token-audience': {
      const aud = form.getAll('aud').filter(Boolean);
      if (!aud.length) return send(400, { error: 'aud is required' });
      nextIdToken.aud = aud.length === 1 ? aud[0] : aud;
      return send(200, { next_id_token: nextIdToken });
    }
    case '/test/next-id-token-nonce': {
      if (!form.has('nonce')) return send(400, { error: 'nonce is required' });
      nextIdToken.nonce = form.get('nonce');
      return send(200, { next_id_token: nextIdToken });
    }
    case '/test/reset':
      nextIdToken = {};
      return send(200, { next_id_token: nextIdToken });
    default:
      return send(404, { error: 'no such test hook' });
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP server: our interaction routes and test hooks, everything else to oidc-provider
// ---------------------------------------------------------------------------------------------

const oidcCallback = provider.callback();

const server = createServer(async (req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  try {
    let m;
    if (req.method === 'GET' && (m = pathname.match(/^\/interaction\/([\w-]+)$/))) {
      return await showInteraction(req, res, m[1]);
    }
    if (req.method === 'POST' && (m = pathname.match(/^\/interaction\/([\w-]+)\/login$/))) {
      return await submitLogin(req, res, m[1]);
    }
    if (req.method === 'POST' && (m = pathname.match(/^\/interaction\/([\w-]+)\/abort$/))) {
      return await abortInteraction(req, res, m[1]);
    }
    if (pathname.startsWith('/interaction/')) {
      return sendHtml(res, 404, errorPage('Not found', 'There is no such sign-in page.'));
    }
    if (pathname.startsWith('/test/')) {
      if (!TEST_HOOKS) return sendHtml(res, 404, errorPage('Not found', 'Test hooks are off.'));
      return await testHook(req, res, pathname);
    }
    return oidcCallback(req, res);
  } catch (err) {
    if (res.headersSent) return res.end();
    if (err instanceof errors.SessionNotFound) {
      return sendHtml(res, 400, errorPage('Sign-in expired',
        'This sign-in has expired or was already used. Go back to the console and start again.'));
    }
    if (err.status === 413) return sendHtml(res, 413, errorPage('Too large', err.message));
    console.error(err);
    return sendHtml(res, 500, errorPage('Server error', 'Something went wrong.'));
  }
});

server.listen(PORT, HOST, () => {
  if (TEST_HOOKS) console.log('OIDC_TEST_HOOKS=1: test hooks under /test/ are ON');
  console.log(`oidc-provider listening on ${ISSUER}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
