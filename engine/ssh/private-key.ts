/**
 * The key drctl logs in with, checked before any connection is opened: ssh2 would otherwise
 * find a bad key only inside `connect()`, after the TCP connection to sshd exists, and a
 * key that cannot be used does not get better by retrying.
 */
import ssh2 from 'ssh2';
import { UsageError } from '../errors.js';

/**
 * Throws UsageError (exit 2) unless `key` is an unencrypted private key ssh2 can use.
 * `where` names it in messages: "host hv1 (hosts/hv1.yaml): ssh.keyFile /root/.ssh/id_ed25519".
 */
export function checkPrivateKey(key: Buffer, where: string): void {
  const parsed = ssh2.utils.parseKey(key);
  if (parsed instanceof Error) {
    if (/encrypted|passphrase/i.test(parsed.message)) {
      throw new UsageError(`${where} is encrypted with a passphrase - encrypted keys are not supported`,
        'give drctl a key without a passphrase (on a copy: `ssh-keygen -p -N "" -f COPY`), and limit what it may do in authorized_keys on the host if needed');
    }
    throw new UsageError(`${where} is not a private key drctl can read - ${parsed.message}`, 'point ssh.keyFile at an OpenSSH or PEM private key (ed25519, ecdsa or rsa)');
  }
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!first || first.getPrivatePEM() === null) {
    throw new UsageError(`${where} is a public key - ssh.keyFile needs the private key`, 'point ssh.keyFile at the private half of the key pair (usually the same name without .pub)');
  }
}
