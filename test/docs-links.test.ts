// Every link in the repository's Markdown leads somewhere: a relative link to a file that
// exists (and to a heading in it, when it names one), an absolute link into this repository
// to a file of this checkout. What the package ships is checked by test/package.test.ts
// (the README read on the registry links only shipped files relatively).
import test from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { REPO } from './support/engine-project.ts';

interface PackageJson {
  repository: { url: string };
}
const REPOSITORY = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson).repository.url.replace(/^git\+/, '').replace(/\.git$/, '');

const markdownFiles = [
  ...['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', 'BENCHMARKS.md', 'RELIABILITY.md'],
  ...readdirSync(join(REPO, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((path) => path.endsWith('.md'))
    .map((path) => join('docs', path)),
].filter((path) => existsSync(join(REPO, path)));

/** Link targets of a Markdown text: inline `[text](target)` and reference definitions `[name]: target`, outside code. */
function links(markdown: string): string[] {
  const prose = markdown.replace(/```[\s\S]*?```/g, '').replace(/^(?: {4}|\t).*$/gm, '');
  const inline = [...prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((match) => match[1]!);
  const definitions = [...prose.matchAll(/^\[[^\]]+\]:\s+(\S+)/gm)].map((match) => match[1]!);
  return [...inline, ...definitions];
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
function anchors(markdown: string): Set<string> {
  const headings = markdown.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6}\s+(.+)$/gm);
  return new Set(
    [...headings].map((match) =>
      match[1]!
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    ),
  );
}

for (const file of markdownFiles) {
  test(`the links of ${file} lead somewhere`, (t) => {
    const text = readFileSync(join(REPO, file), 'utf8');
    let checked = 0;
    for (const target of links(text)) {
      if (/^mailto:/.test(target)) continue;
      let path: string;
      let anchor: string | undefined;
      if (/^https?:/.test(target)) {
        const inRepository = new RegExp(`^${REPOSITORY.replace(/[.]/g, '\\.')}/(?:blob|tree)/main/([^#]+)(?:#(.*))?$`).exec(target);
        if (!inRepository) continue; // elsewhere on the web: not checked offline
        path = inRepository[1]!;
        anchor = inRepository[2];
      } else {
        const [file_, fragment] = target.split('#') as [string, string | undefined];
        path = file_ === '' ? file : relative(REPO, join(REPO, dirname(file), file_));
        anchor = fragment;
      }
      t.true(existsSync(join(REPO, path)), `${file} links ${target}: ${path} does not exist`);
      if (anchor && path.endsWith('.md') && existsSync(join(REPO, path))) {
        t.true(anchors(readFileSync(join(REPO, path), 'utf8')).has(anchor), `${file} links ${target}: ${path} has no heading #${anchor}`);
      }
      checked++;
    }
    t.log(`${checked} links checked`);
    t.pass();
  });
}

test('the README links every reference page in docs/', (t) => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const pages = readdirSync(join(REPO, 'docs')).filter((name) => name.endsWith('.md'));
  t.true(pages.length > 0);
  for (const page of pages) t.true(readme.includes(`/blob/main/docs/${page}`), `the README does not link docs/${page}`);
});
