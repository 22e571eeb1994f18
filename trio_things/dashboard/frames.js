// A frame stream (multipart/x-mixed-replace, MJPEG) read by script, for servers that
// want a token: an <img src> sends no Authorization header, a fetch does. Each part is
// shown from a blob: URL (the CSP allows img-src blob:). Without a token the page lets
// the <img> read the stream itself, which costs no script at all.

import {request} from "./api.js";

const CRLF2 = [13, 10, 13, 10];
const latin1 = new TextDecoder("latin1");

function indexOf(bytes, pattern, from = 0) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i += 1) {
    for (let j = 0; j < pattern.length; j += 1) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(a, b) {
  if (a.length === 0) return b;
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

/**
 * Read the stream at `url` until `signal` aborts or it ends, calling `onFrame(blob)`
 * with each whole image. Parts need a Content-Length (trio-things sends one), else the
 * next delimiter ends them.
 */
export async function readFrames(url, onFrame, signal) {
  const response = await request(url, {signal});
  const type = response.headers.get("content-type") || "";
  const match = /boundary="?([^";]+)"?/i.exec(type);
  if (!match || !response.body) throw new Error(`not a multipart stream: ${type}`);
  const delimiter = new TextEncoder().encode(`--${match[1]}`);
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer = concat(buffer, value);
    for (;;) {
      const start = indexOf(buffer, delimiter);
      if (start < 0) break;
      const headEnd = indexOf(buffer, CRLF2, start);
      if (headEnd < 0) break;
      const head = latin1.decode(buffer.subarray(start, headEnd));
      const length = /content-length:\s*(\d+)/i.exec(head);
      const media = /content-type:\s*([^\r\n]+)/i.exec(head);
      const bodyStart = headEnd + 4;
      let bodyEnd;
      if (length) {
        bodyEnd = bodyStart + Number(length[1]);
        if (buffer.length < bodyEnd) break;
      } else {
        bodyEnd = indexOf(buffer, delimiter, bodyStart);
        if (bodyEnd < 0) break;
        bodyEnd = Math.max(bodyStart, bodyEnd - 2);  // the CRLF before the delimiter
      }
      const mediaType = media ? media[1].trim() : "application/octet-stream";
      if (mediaType.startsWith("image/")) {
        onFrame(new Blob([buffer.slice(bodyStart, bodyEnd)], {type: mediaType}));
      }
      buffer = buffer.slice(bodyEnd);
    }
  }
}
