/** Images for vision requests: the runtime takes base64 or `data:image/…;base64,` URIs. */
import type { ImagePart } from './types/index.js';

/** The bytes of an image file as a data URI; the type is read from the file's signature
 * (PNG, JPEG, GIF, WebP, BMP, TIFF) when not given. */
export function imageDataUri(data: Uint8Array, mimeType: string = sniffImageType(data)): string {
  const base64 = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
  return `data:${mimeType};base64,${base64}`;
}

/** A `messages` content part holding an image: bytes, or a base64 / data URI string. */
export function imagePart(image: Uint8Array | string, mimeType?: string): ImagePart {
  return { type: 'image', image: typeof image === 'string' ? image : imageDataUri(image, mimeType) };
}

const SIGNATURES: Array<[string, number[]]> = [
  ['image/png', [0x89, 0x50, 0x4e, 0x47]],
  ['image/jpeg', [0xff, 0xd8, 0xff]],
  ['image/gif', [0x47, 0x49, 0x46, 0x38]],
  ['image/bmp', [0x42, 0x4d]],
  ['image/tiff', [0x49, 0x49, 0x2a, 0x00]],
  ['image/tiff', [0x4d, 0x4d, 0x00, 0x2a]],
];

function sniffImageType(data: Uint8Array): string {
  const ascii = (start: number, end: number) => String.fromCharCode(...data.subarray(start, end));
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'image/webp';
  for (const [type, bytes] of SIGNATURES) {
    if (bytes.every((byte, i) => data[i] === byte)) return type;
  }
  return 'application/octet-stream'; // the runtime answers that it is not an image
}
