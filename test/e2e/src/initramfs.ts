/**
 * Builds (and caches) a tiny busybox initramfs that loads the virtio modules, runs one test
 * script and powers the guest off. The script's output is framed on the serial console by
 * {@link MARKER_BEGIN} and a `@@E2E-RESULT rc=N@@` line so the host can find it among
 * whatever else the console prints.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildNewcCpio, type CpioEntry } from './cpio.js';
import type { KernelInfo } from './env.js';

/** Printed by /init right before the test script runs. */
export const MARKER_BEGIN = '@@E2E-BEGIN@@';
/** Prefix of the line /init prints after the script: `@@E2E-RESULT rc=N@@`. */
export const MARKER_RESULT = '@@E2E-RESULT rc=';
/** Printed by /init when a module fails to load: `@@E2E-INSMOD-FAILED name@@`. */
export const MARKER_INSMOD_FAILED = '@@E2E-INSMOD-FAILED ';

/** Modules a virtio-blk guest needs (dependencies are added from modules.dep). */
export const BLK_MODULES: readonly string[] = [
  'virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_blk',
];
/** Modules a virtio-net guest needs on top of the PCI transport. */
export const NET_MODULES: readonly string[] = [
  'virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'failover', 'net_failover', 'virtio_net',
];

/** Thrown when a module cannot be found or decompressed, or busybox is unusable. */
export class InitramfsError extends Error {
  override readonly name = 'InitramfsError';
  constructor(readonly code: 'MODULE_NOT_FOUND' | 'DECOMPRESS_FAILED' | 'BUSYBOX_FAILED', message: string) {
    super(message);
  }
}

/** Inputs of {@link buildInitramfs}. */
export interface InitramfsOptions {
  readonly kernel: KernelInfo;
  /** Path of a statically linked busybox. */
  readonly busybox: string;
  /** Shell script run as `/test.sh` by busybox `sh`; its exit status becomes `rc`. */
  readonly script: string;
  /** Modules to load (names as in modules.dep, `-` or `_`); dependencies are added. Default {@link BLK_MODULES}. */
  readonly modules?: readonly string[];
  /** Extra files placed in the image (relative path → contents), e.g. expected digests. */
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
  /** gzip the archive (default true; the Debian kernel has CONFIG_RD_GZIP). */
  readonly compress?: boolean;
  /** Cache directory (default `$TMPDIR/vhost-ts-e2e`). */
  readonly cacheDir?: string;
}

/** Bumped whenever the layout or /init changes, so stale cached images are not reused. */
const FORMAT_VERSION = 1;

/** Default cache directory for initramfs images and other e2e artefacts. */
export function defaultCacheDir(): string {
  return join(tmpdir(), 'vhost-ts-e2e');
}

function normalize(name: string): string {
  return name.replace(/-/g, '_');
}

function moduleNameOf(path: string): string {
  return normalize(basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, ''));
}

interface ModuleDb {
  /** module name → path relative to the modules dir */
  readonly paths: Map<string, string>;
  /** module path → dependency paths */
  readonly deps: Map<string, string[]>;
  readonly builtin: Set<string>;
}

function readModuleDb(kernel: KernelInfo): ModuleDb {
  const paths = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    paths.set(moduleNameOf(path), path);
    deps.set(path, rest === '' ? [] : rest.split(/\s+/));
  }
  const builtin = new Set<string>();
  try {
    for (const line of readFileSync(join(kernel.modulesDir, 'modules.builtin'), 'utf8').split('\n')) {
      if (line.trim() !== '') builtin.add(moduleNameOf(line.trim()));
    }
  } catch {
    // no modules.builtin: nothing is known to be built in
  }
  return { paths, deps, builtin };
}

/**
 * Resolves `names` (plus their dependencies) to module paths in load order: every module
 * comes after all modules it depends on. Built-in modules are dropped.
 */
export function resolveModules(kernel: KernelInfo, names: readonly string[]): string[] {
  const db = readModuleDb(kernel);
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string, stack: string[]): void => {
    if (seen.has(path)) return;
    if (stack.includes(path)) return; // modules.dep has no cycles; guard anyway
    for (const d of db.deps.get(path) ?? []) visit(d, [...stack, path]);
    seen.add(path);
    order.push(path);
  };
  for (const raw of names) {
    const name = normalize(raw);
    const path = db.paths.get(name);
    if (path === undefined) {
      if (db.builtin.has(name)) continue;
      throw new InitramfsError('MODULE_NOT_FOUND', `module ${raw} is neither in ${kernel.modulesDir}/modules.dep nor built in`);
    }
    visit(path, []);
  }
  return order;
}

/**
 * Returns the module as a plain ELF `.ko`: busybox insmod hands the bytes to init_module(2),
 * which does not decompress, so .xz/.zst/.gz modules are decompressed here on the host.
 */
function loadModuleBytes(fullPath: string): Buffer {
  try {
    if (fullPath.endsWith('.ko')) return readFileSync(fullPath);
    if (fullPath.endsWith('.ko.gz')) return gunzipSync(readFileSync(fullPath));
    if (fullPath.endsWith('.ko.xz')) return execFileSync('xz', ['-dc', fullPath], { maxBuffer: 1 << 28 });
    if (fullPath.endsWith('.ko.zst')) return execFileSync('zstd', ['-dcq', fullPath], { maxBuffer: 1 << 28 });
  } catch (err) {
    throw new InitramfsError('DECOMPRESS_FAILED', `cannot read/decompress ${fullPath}: ${(err as Error).message}`);
  }
  throw new InitramfsError('DECOMPRESS_FAILED', `unknown module format: ${fullPath}`);
}

const appletCache = new Map<string, string[]>();

function busyboxApplets(busybox: string): string[] {
  let list = appletCache.get(busybox);
  if (list === undefined) {
    try {
      list = execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n').map((s) => s.trim()).filter((s) => /^[\w.[-]+$/.test(s));
    } catch (err) {
      throw new InitramfsError('BUSYBOX_FAILED', `${busybox} --list failed: ${(err as Error).message}`);
    }
    appletCache.set(busybox, list);
  }
  return list;
}

/**
 * /init: mount the pseudo filesystems, silence the kernel log on the console (so its lines do
 * not interleave with the script's), load the modules in order, run the script framed by the
 * markers, power off. `poweroff -f` skips init's shutdown; `panic=-1` with `-no-reboot` also
 * ends QEMU if /init itself dies.
 */
function initScript(): string {
  return `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
dmesg -n 1
while read m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" || echo "${MARKER_INSMOD_FAILED}$m@@"
done < /modules.order
cd /
echo "${MARKER_BEGIN}"
sh /test.sh 2>&1
echo "${MARKER_RESULT}$?@@"
sync
poweroff -f
`;
}

const CACHE_MAX_AGE_MS = 7 * 24 * 3600 * 1000;

/** Drops cached images not rebuilt for a week (scripts change, so old keys pile up). */
function pruneCache(cacheDir: string): void {
  const now = Date.now();
  for (const f of readdirSync(cacheDir)) {
    if (!f.startsWith('initramfs-')) continue;
    const p = join(cacheDir, f);
    try {
      if (now - statSync(p).mtimeMs > CACHE_MAX_AGE_MS) rmSync(p, { force: true });
    } catch {
      // raced with another process: fine
    }
  }
}

/**
 * Builds the initramfs (or reuses the cached one with the same inputs) and returns its path.
 * The cache key covers the kernel version, the module bytes' identity, busybox, the script,
 * the extra files and the format version.
 */
export function buildInitramfs(opts: InitramfsOptions): string {
  const compress = opts.compress ?? true;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const modulePaths = resolveModules(opts.kernel, opts.modules ?? BLK_MODULES);
  const bbStat = statSync(opts.busybox);

  const h = createHash('sha256');
  h.update(`v${FORMAT_VERSION}\0${opts.kernel.version}\0${compress}\0`);
  h.update(`${opts.busybox}\0${bbStat.size}\0${bbStat.mtimeMs}\0`);
  for (const p of modulePaths) {
    const st = statSync(join(opts.kernel.modulesDir, p));
    h.update(`${p}\0${st.size}\0${st.mtimeMs}\0`);
  }
  h.update(opts.script);
  h.update('\0');
  for (const [name, data] of Object.entries(opts.files ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    h.update(`${name}\0`);
    h.update(data);
    h.update('\0');
  }
  const key = h.digest('hex').slice(0, 20);
  const out = join(cacheDir, `initramfs-${opts.kernel.version}-${key}.cpio${compress ? '.gz' : ''}`);
  if (existsSync(out)) return out;

  const entries: CpioEntry[] = [];
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules']) entries.push({ type: 'dir', path: d });
  // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
  entries.push({ type: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ type: 'file', path: 'bin/busybox', data: readFileSync(opts.busybox), mode: 0o755 });
  for (const applet of busyboxApplets(opts.busybox)) {
    if (applet !== 'busybox') entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  }
  const order: string[] = [];
  for (const p of modulePaths) {
    const name = moduleNameOf(p);
    order.push(name);
    entries.push({ type: 'file', path: `lib/modules/${name}.ko`, data: loadModuleBytes(join(opts.kernel.modulesDir, p)) });
  }
  entries.push({ type: 'file', path: 'modules.order', data: Buffer.from(order.join('\n') + '\n') });
  entries.push({ type: 'file', path: 'init', data: Buffer.from(initScript()), mode: 0o755 });
  entries.push({ type: 'file', path: 'test.sh', data: Buffer.from(opts.script), mode: 0o755 });
  const dirs = new Set(entries.filter((e) => e.type === 'dir').map((e) => e.path));
  for (const [name, data] of Object.entries(opts.files ?? {})) {
    const rel = name.replace(/^\/+/, '');
    // Create missing parent directories of extra files.
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ type: 'dir', path: d });
      }
    }
    entries.push({ type: 'file', path: rel, data: typeof data === 'string' ? Buffer.from(data) : data });
  }

  let archive = buildNewcCpio(entries);
  // Level 1: the archive is ~5 MB; fastest level keeps a cold build well under a second.
  if (compress) archive = gzipSync(archive, { level: 1 });
  mkdirSync(cacheDir, { recursive: true });
  pruneCache(cacheDir);
  // Atomic publish: tap runs test files in parallel and they may build the same image.
  const tmp = `${out}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(tmp, archive);
  renameSync(tmp, out);
  return out;
}
