// RFC 9162 inclusion proofs checked in the browser with crypto.subtle, so a patient need not
// take the service's word that an access included them: the same algorithm as
// dul.cohort.verify_inclusion and ConsentRegistry.cohortIncludes on chain.
//   leaf = SHA-256(0x00 || subject)        node = SHA-256(0x01 || left || right)

const HEX32 = /^0x[0-9a-fA-F]{64}$/;

export class ProofError extends Error {}

/** 32 bytes from 0x + 64 hex digits (a ProofError otherwise). */
export function bytes32(hex) {
  if (typeof hex !== "string" || !HEX32.test(hex)) {
    throw new ProofError(`not 32 bytes of hex: ${String(hex).slice(0, 80)}`);
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i += 1) out[i] = parseInt(hex.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

/** Whether this page can hash (crypto.subtle exists only in a secure context: https or localhost). */
export function canVerify() {
  return Boolean(globalThis.crypto && globalThis.crypto.subtle);
}

async function hash(prefix, ...parts) {
  const data = new Uint8Array(1 + 32 * parts.length);
  data[0] = prefix;
  parts.forEach((part, i) => data.set(part, 1 + 32 * i));
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

/** RFC 9162 §2.1.3.2: whether `subject` is leaf `index` of the tree with head (`root`, `size`).
 * Hex arguments are 0x + 64 hex digits; a malformed one raises a ProofError. */
export async function verifyInclusion(root, size, index, subject, proof) {
  const expected = bytes32(root);
  const siblings = proof.map(bytes32);
  if (!Number.isSafeInteger(size) || !Number.isSafeInteger(index) || index < 0 || index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let node = await hash(0, bytes32(subject));
  for (const sibling of siblings) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      node = await hash(1, sibling, node);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      node = await hash(1, node, sibling);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && node.every((byte, i) => byte === expected[i]);
}
