import test from 'ava';
import { createHmac, randomBytes } from 'node:crypto';
import { checkHostKey, fingerprintOf, HostKeyError } from '../../../engine/ssh/index.js';

const key = randomBytes(51);
const other = randomBytes(51);
const b64 = key.toString('base64');

test('a pinned SHA256 fingerprint accepts its key and refuses another, naming the key to pin', (t) => {
  const fp = fingerprintOf(key);
  t.regex(fp, /^SHA256:[A-Za-z0-9+/]{43}$/);
  t.notThrows(() => checkHostKey('host hv1', '10.0.0.5', 22, key, { hostKey: fp }));
  const e = t.throws(() => checkHostKey('host hv1', '10.0.0.5', 22, other, { hostKey: fp }), { instanceOf: HostKeyError });
  t.true(e?.message.includes(fingerprintOf(other)));
  t.true(e?.hint?.includes(`hostKey: "${fingerprintOf(other)}"`));
});

test('a pinned public key line works like its fingerprint', (t) => {
  t.notThrows(() => checkHostKey('h', 'a', 22, key, { hostKey: `ssh-ed25519 ${b64}` }));
  t.throws(() => checkHostKey('h', 'a', 22, other, { hostKey: `ssh-ed25519 ${b64}` }), { instanceOf: HostKeyError });
});

test('known_hosts: plain, [host]:port and hashed entries; unknown host and changed key are refused', (t) => {
  t.notThrows(() => checkHostKey('h', '10.0.0.5', 22, key, { knownHosts: `# comment\nother.example ssh-ed25519 ${other.toString('base64')}\n10.0.0.5 ssh-ed25519 ${b64}\n` }));
  t.notThrows(() => checkHostKey('h', '127.0.0.1', 2222, key, { knownHosts: `[127.0.0.1]:2222 ssh-ed25519 ${b64}\n` }));
  const salt = randomBytes(20);
  const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('hv1.example').digest('base64')}`;
  t.notThrows(() => checkHostKey('h', 'hv1.example', 22, key, { knownHosts: `${hashed} ssh-ed25519 ${b64}\n` }));
  t.throws(() => checkHostKey('h', '10.0.0.6', 22, key, { knownHosts: `10.0.0.5 ssh-ed25519 ${b64}\n` }), { message: /not in the known_hosts/ });
  t.throws(() => checkHostKey('h', '10.0.0.5', 22, other, { knownHosts: `10.0.0.5 ssh-ed25519 ${b64}\n` }), { message: /does not match known_hosts/ });
  t.throws(() => checkHostKey('h', '10.0.0.5', 22, key, {}), { message: /no hostKey or knownHosts/ });
});
