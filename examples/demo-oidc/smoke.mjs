// DEMO ONLY: end-to-end smoke test of provider.mjs. Starts its own provider (with the test hooks
// on) on a loopback port, drives discovery, login, token, replay, logout and the hooks with plain
// HTTP, and stops it again. Nothing listens at CONSOLE_BASE: redirects there are read, not followed.
//
//   node examples/demo-oidc/smoke.mjs        (SMOKE_PORT, default 18090)

import { spawn } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';

const PORT = Number(process.env.SMOKE_PORT ?? 18090);
const ISSUER = `http://127.0.0.1:${PORT}`;
const CONSOLE_BASE = 'http://127.0.0.1:18080';
const REDIRECT_URI = `${CONSOLE_BASE}/console/callback`;
const LOGGED_OUT = `${CONSOLE_BASE}/console/signed-out`;
const CLIENTS = {
  'vpr-console': 'demo-only-console-secret-not-for-production',
  'other-app': 'demo-only-other-secret',
};

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed += 1; else failed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail && !ok ? ` -- ${detail}` : ''}`);
}

// --- a tiny browser: cookie jar and manual redirects ------------------------------------------

class Browser {
  jar = new Map();

  async request(url, { method = 'GET', form, headers = {} } = {}) {
    const h = { ...headers };
    if (this.jar.size) h.cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      h['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(new URL(url, ISSUER), { method, headers: h, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const expired = attrs.some((a) => /expires=thu, 01 jan 1970/i.test(a.trim()));
      if (expired || value === '') this.jar.delete(name); else this.jar.set(name, value);
    }
    return { status: res.status, location: res.headers.get('location'), text: await res.text() };
  }

  // Follows redirects within the provider; stops at (and returns) the first one leaving it.
  async follow(url, opts) {
    let res = await this.request(url, opts);
    for (let hops = 0; hops < 10 && res.location; hops += 1) {
      const next = new URL(res.location, ISSUER);
      if (next.origin !== ISSUER) return { ...res, leftTo: next };
      res = await this.request(next);
    }
    return res;
  }
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function pkce() {
  const verifier = b64url(randomBytes(32));
  return { verifier, challenge: b64url(createHash('sha256').update(verifier).digest()) };
}

function authUrl(params) {
  const u = new URL('/auth', ISSUER);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u;
}

function newAuthRequest(clientId = 'vpr-console', extra = {}) {
  const p = pkce();
  const state = b64url(randomBytes(12));
  const nonce = b64url(randomBytes(12));
  const url = authUrl({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid profile email vpr',
    state,
    nonce,
    code_challenge: p.challenge,
    code_challenge_method: 'S256',
    ...extra,
  });
  return { url, state, nonce, verifier: p.verifier };
}

async function login(browser, url, username, password) {
  const start = await browser.follow(url);
  const uid = start.text.match(/action="\/interaction\/([\w-]+)\/login"/)?.[1];
  if (!uid) return { start };
  const res = await browser.follow(`/interaction/${uid}/login`, { method: 'POST', form: { username, password } });
  return { start, uid, res };
}

async function token(code, verifier, clientId = 'vpr-console', how = 'basic') {
  const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
  const headers = {};
  if (how === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${clientId}:${CLIENTS[clientId]}`).toString('base64')}`;
  } else {
    Object.assign(form, { client_id: clientId, client_secret: CLIENTS[clientId] });
  }
  const res = await fetch(`${ISSUER}/token`, {
    method: 'POST', headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form),
  });
  return { status: res.status, json: await res.json() };
}

let jwks;
function verifyIdToken(jwt) {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  const ok = !!jwk && header.alg === 'RS256'
    && verify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
  return { header, payload: JSON.parse(Buffer.from(p, 'base64url')), signatureOk: ok };
}

// --- start the provider ------------------------------------------------------------------------

const child = spawn(process.execPath, [new URL('./provider.mjs', import.meta.url).pathname], {
  env: { ...process.env, PORT: String(PORT), ISSUER, CONSOLE_BASE, OIDC_TEST_HOOKS: '1' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('provider did not start within 10 s')), 10_000);
  child.stdout.on('data', (d) => {
    if (String(d).includes(`oidc-provider listening on ${ISSUER}`)) { clearTimeout(timer); resolve(); }
  });
  child.on('exit', (code) => reject(new Error(`provider exited early (${code})`)));
});

try {
  // discovery
  const disc = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
  check('discovery: issuer', disc.issuer === ISSUER, disc.issuer);
  check('discovery: scopes include vpr', disc.scopes_supported?.includes('vpr'), disc.scopes_supported);
  check('discovery: claims include ods_code, console_role',
    ['ods_code', 'console_role'].every((c) => disc.claims_supported?.includes(c)), disc.claims_supported);
  check('discovery: PKCE S256 only', JSON.stringify(disc.code_challenge_methods_supported) === '["S256"]');
  check('discovery: end_session_endpoint', disc.end_session_endpoint === `${ISSUER}/session/end`, disc.end_session_endpoint);
  jwks = await (await fetch(disc.jwks_uri)).json();

  // no PKCE -> refused
  {
    const b = new Browser();
    const { url, state } = newAuthRequest();
    url.searchParams.delete('code_challenge');
    url.searchParams.delete('code_challenge_method');
    const res = await b.follow(url);
    const q = res.leftTo?.searchParams;
    check('authorization without PKCE is refused', q?.get('error') === 'invalid_request' && q.get('state') === state && !q.has('code'),
      `${res.status} ${res.leftTo ?? res.text.slice(0, 200)}`);
  }
  // plain PKCE -> refused
  {
    const b = new Browser();
    const { url } = newAuthRequest(undefined, { code_challenge_method: 'plain' });
    const res = await b.follow(url);
    check('authorization with PKCE plain is refused', res.leftTo?.searchParams.get('error') === 'invalid_request', String(res.leftTo));
  }

  // login page, wrong password, right password
  const browser = new Browser();
  const req1 = newAuthRequest();
  const first = await browser.follow(req1.url);
  const uid = first.text.match(/action="\/interaction\/([\w-]+)\/login"/)?.[1];
  check('login page is our form with #username #password #sign-in',
    !!uid && /id="username" name="username"/.test(first.text) && /id="password" name="password" type="password"/.test(first.text)
      && /<button id="sign-in" type="submit">/.test(first.text) && /<label for="username">/.test(first.text));
  const wrong = await browser.follow(`/interaction/${uid}/login`, { method: 'POST', form: { username: 'caldicott', password: 'wrong' } });
  check('wrong password shows the error', wrong.status === 200 && /id="login-error" role="alert"/.test(wrong.text) && !wrong.leftTo);
  const unknown = await browser.follow(`/interaction/${uid}/login`, { method: 'POST', form: { username: 'nobody', password: 'demo-password' } });
  check('unknown user shows the same error', /The username or password is incorrect/.test(unknown.text) && !unknown.leftTo);
  const ok = await browser.follow(`/interaction/${uid}/login`, { method: 'POST', form: { username: 'caldicott', password: 'demo-password' } });
  const cb = ok.leftTo;
  check('login redirects to the redirect_uri with code and state',
    cb?.origin + cb?.pathname === REDIRECT_URI && !!cb.searchParams.get('code') && cb.searchParams.get('state') === req1.state,
    String(cb ?? ok.text.slice(0, 300)));
  check('authorization response carries iss', cb?.searchParams.get('iss') === ISSUER, String(cb));
  const code1 = cb.searchParams.get('code');

  // token exchange
  const t1 = await token(code1, req1.verifier);
  check('token exchange (client_secret_basic + code_verifier)', t1.status === 200 && !!t1.json.id_token, JSON.stringify(t1.json));
  const id1 = verifyIdToken(t1.json.id_token);
  const pl = id1.payload;
  console.log('     id_token payload:', JSON.stringify(pl));
  check('ID token signature verifies with jwks_uri (RS256)', id1.signatureOk);
  check('ID token iss, aud, nonce', pl.iss === ISSUER && pl.aud === 'vpr-console' && pl.nonce === req1.nonce);
  check('ID token sub, name, email', pl.sub === 'nma-72edcc212e33af83' && pl.name === 'Dr Morgan Heathfield' && !!pl.email);
  check('ID token ods_code, console_role', pl.ods_code === 'XAC01' && pl.console_role === 'caldicott-guardian');

  check('ID token exp = iat + 1 h (default TTL)', pl.exp - pl.iat === 3600);

  const me = await (await fetch(disc.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.json.access_token}` } })).json();
  check('userinfo has the same claims', me.sub === pl.sub && me.ods_code === 'XAC01' && me.console_role === 'caldicott-guardian', JSON.stringify(me));

  const replay = await token(code1, req1.verifier);
  check('replaying the code fails (invalid_grant)', replay.status === 400 && replay.json.error === 'invalid_grant', JSON.stringify(replay.json));
  const meAfter = await fetch(disc.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.json.access_token}` } });
  check('replay revoked the access token of that code', meAfter.status === 401, String(meAfter.status));

  // the session is kept: the next authorization needs no login; client_secret_post also works
  const req2 = newAuthRequest();
  const again = await browser.follow(req2.url);
  const code2 = again.leftTo?.searchParams.get('code');
  check('existing session: straight back with a code', !!code2 && again.leftTo.searchParams.get('state') === req2.state, String(again.leftTo));
  const wrongVerifier = await token(code2, pkce().verifier, 'vpr-console', 'post');
  check('wrong code_verifier is refused', wrongVerifier.status === 400 && wrongVerifier.json.error === 'invalid_grant');

  const req3 = newAuthRequest();
  const code3 = (await browser.follow(req3.url)).leftTo?.searchParams.get('code');
  const t3 = await token(code3, req3.verifier, 'vpr-console', 'post');
  check('token exchange with client_secret_post', t3.status === 200 && !!t3.json.id_token, JSON.stringify(t3.json));

  // scope masking: without `vpr` (and profile/email) those claims stay out of the ID token
  const reqS = newAuthRequest('vpr-console', { scope: 'openid' });
  const codeS = (await browser.follow(reqS.url)).leftTo?.searchParams.get('code');
  const plS = verifyIdToken((await token(codeS, reqS.verifier)).json.id_token).payload;
  check('scope openid only: no name, ods_code, console_role', !!plS.sub && !('name' in plS) && !('ods_code' in plS) && !('console_role' in plS),
    JSON.stringify(plS));

  // a code issued to other-app cannot be redeemed by vpr-console
  const reqO = newAuthRequest('other-app');
  const codeO = (await browser.follow(reqO.url)).leftTo?.searchParams.get('code');
  const tO = await token(codeO, reqO.verifier, 'vpr-console');
  check('code of other-app refused to vpr-console', tO.status === 400 && tO.json.error === 'invalid_grant', JSON.stringify(tO.json));

  // test hook: wrong audience on the next ID token
  const armed = await fetch(`${ISSUER}/test/next-id-token-audience`, { method: 'POST', body: new URLSearchParams({ aud: 'someone-else' }) });
  check('test hook armed', armed.status === 200);
  const req4 = newAuthRequest();
  const code4 = (await browser.follow(req4.url)).leftTo?.searchParams.get('code');
  const t4 = await token(code4, req4.verifier);
  const id4 = verifyIdToken(t4.json.id_token);
  check('hooked ID token has aud=someone-else, valid signature, right nonce',
    id4.payload.aud === 'someone-else' && id4.signatureOk && id4.payload.nonce === req4.nonce, JSON.stringify(id4.payload));
  const req5 = newAuthRequest();
  const code5 = (await browser.follow(req5.url)).leftTo?.searchParams.get('code');
  const id5 = verifyIdToken((await token(code5, req5.verifier)).json.id_token);
  check('hook is one-shot (next ID token aud=vpr-console)', id5.payload.aud === 'vpr-console');

  await fetch(`${ISSUER}/test/next-id-token-nonce`, { method: 'POST', body: new URLSearchParams({ nonce: 'not-your-nonce' }) });
  const req6 = newAuthRequest();
  const code6 = (await browser.follow(req6.url)).leftTo?.searchParams.get('code');
  const id6 = verifyIdToken((await token(code6, req6.verifier)).json.id_token);
  check('nonce hook: ID token nonce replaced', id6.payload.nonce === 'not-your-nonce' && id6.signatureOk);

  // RP-initiated logout
  const badLogout = await browser.request(`/session/end?${new URLSearchParams({
    id_token_hint: t1.json.id_token, post_logout_redirect_uri: 'http://127.0.0.1:18080/elsewhere',
  })}`);
  check('end_session refuses an unregistered post_logout_redirect_uri', badLogout.status === 400, String(badLogout.status));
  const logout = await browser.request(`/session/end?${new URLSearchParams({
    id_token_hint: t1.json.id_token, post_logout_redirect_uri: LOGGED_OUT, state: 'bye-123',
  })}`);
  const xsrf = logout.text.match(/name="xsrf" value="([^"]+)"/)?.[1];
  check('logout page: auto-submitting form with #logout-confirm',
    logout.status === 200 && !!xsrf && /id="logout-confirm"[^>]*name="logout" value="yes"/.test(logout.text) && /\.click\(\)/.test(logout.text));
  const confirm = await browser.follow('/session/end/confirm', { method: 'POST', form: { xsrf, logout: 'yes' } });
  const out = confirm.leftTo;
  check('logout redirects to post_logout_redirect_uri with state',
    out?.origin + out?.pathname === LOGGED_OUT && out.searchParams.get('state') === 'bye-123', String(out ?? confirm.status));
  const afterLogout = await browser.follow(newAuthRequest().url);
  check('after logout the login form is shown again', /id="sign-in"/.test(afterLogout.text) && !afterLogout.leftTo);

  // cancel on the login page -> access_denied to the client
  const reqC = newAuthRequest();
  const cancelStart = await browser.follow(reqC.url);
  const cuid = cancelStart.text.match(/action="\/interaction\/([\w-]+)\/login"/)?.[1];
  const cancelled = await browser.follow(`/interaction/${cuid}/abort`, { method: 'POST', form: {} });
  check('cancel returns error=access_denied with state',
    cancelled.leftTo?.searchParams.get('error') === 'access_denied' && cancelled.leftTo.searchParams.get('state') === reqC.state);

  // every demo user can sign in and gets its claims
  const { users } = JSON.parse(await (await import('node:fs/promises')).readFile(new URL('./users.json', import.meta.url), 'utf8'));
  for (const u of users) {
    const b = new Browser();
    const r = newAuthRequest();
    const { res } = await login(b, r.url, u.username, 'demo-password');
    const c = res?.leftTo?.searchParams.get('code');
    const p = c ? verifyIdToken((await token(c, r.verifier)).json.id_token).payload : {};
    check(`user ${u.username}: ${p.console_role}@${p.ods_code}`, p.sub === u.sub && p.ods_code === u.ods_code && p.console_role === u.console_role);
  }
} catch (err) {
  check('smoke test ran to the end', false, err.stack);
} finally {
  child.kill('SIGTERM');
}

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
