// Text that came from a store (a name in an image header, a field of a record) shown in a
// one-line message: quoted, with anything but printable ASCII escaped, so it can neither
// break the line nor pass for the tool's own words, and cut to a length a line can hold.

const MAX_SHOWN = 200;

export function quoteUntrusted(text: string): string {
  const shown = text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}...` : text;
  const escaped = shown.replace(/["\\]|[^\x20-\x7e]/g, (char) =>
    char === '"' || char === '\\' ? `\\${char}` : `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `"${escaped}"`;
}
