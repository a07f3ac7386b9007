// The sha256sum line format of `{name}.qcow2.sha256`: `<hex>  {name}.qcow2\n`.

export interface ChecksumLine {
  readonly sha256: string;
  readonly fileName: string;
}

export function parseChecksumFile(text: string, source: string): ChecksumLine {
  const match = /^([0-9a-fA-F]{64}) [ *]([^\s/]+)\s*$/.exec(text.trim());
  if (!match) throw new Error(`${source} is not a sha256sum line ("<sha256>  <file>")`);
  return { sha256: match[1]!.toLowerCase(), fileName: match[2]! };
}

export function formatChecksumLine(sha256: string, fileName: string): string {
  return `${sha256}  ${fileName}\n`;
}
