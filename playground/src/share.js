// A spec in a link: UTF-8 text, zlib-deflated (CompressionStream "deflate": its Adler-32 checksum catches a
// corrupted link, where raw deflate could inflate to garbage), base64url, in the URL fragment (never sent to a
// server). Decoding checks every step and says which one failed, and refuses to inflate past a size limit so a
// small hostile link cannot expand into gigabytes.

/** Longest spec that is turned into a link (characters). */
export const MAX_SHARE_CHARS = 200_000;
/** Longest text a link may inflate to (bytes). */
const MAX_INFLATED_BYTES = 1_000_000;

/** Why a link cannot be opened, in words for the page's message. */
export class ShareError extends Error {}

function toBase64url(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new ShareError("it holds characters a share link never has");
  if (text.length % 4 === 1) throw new ShareError("its length is impossible for a share link (was it cut short?)");
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export async function encodeSpec(text) {
  const stream = new Blob([new TextEncoder().encode(text)]).stream().pipeThrough(new CompressionStream("deflate"));
  return toBase64url(new Uint8Array(await new Response(stream).arrayBuffer()));
}

export async function decodeSpec(encoded) {
  if (!encoded) throw new ShareError("it is empty");
  const compressed = fromBase64url(encoded);
  const reader = new Blob([compressed]).stream().pipeThrough(new DecompressionStream("deflate")).getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_INFLATED_BYTES) {
        await reader.cancel();
        throw new ShareError(`it expands to more than ${MAX_INFLATED_BYTES / 1_000_000} MB`);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof ShareError) throw error;
    throw new ShareError("its compressed data is corrupted or cut short");
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ShareError("it does not hold UTF-8 text");
  }
}
