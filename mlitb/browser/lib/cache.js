// A worker's data cache (the browser twin of mlitb/training/_cache.py): uint8 images and label indices
// keyed by data id, and which ids are allocated to this worker. Computation uses the ids that
// are both cached and allocated (and whose label the network knows); ids that left the share
// stay cached (the master prefers workers that cached an id when it re-allocates it) until
// evictInactive drops them.

export class DataCache {
  /** @param shape [C, H, W] of one image */
  constructor(shape) {
    this.shape = shape;
    this.size = shape[0] * shape[1] * shape[2];
    this.capacity = 0;
    this.count = 0;
    this.pixels = new Uint8Array(0);
    this.labels = new Int32Array(0);
    this.ids = new Uint32Array(0);
    this.slot = new Map(); // id -> row
    this.allocation = new Set(); // allocated ids
    this._usable = null; // cached rows: [rows of allocated cached ids], rebuilt when dirty
    this._usableClasses = -1;
  }

  get allocated() { return this.allocation.size; }
  has(id) { return this.slot.has(id); }

  /** Cached and allocated ids (whatever their label). */
  get cachedAllocated() {
    let n = 0;
    for (const id of this.allocation) if (this.slot.has(id)) n++;
    return n;
  }

  clearAllocation() { this.allocation.clear(); this._usable = null; }

  /** Apply an allocation message; returns the added ids that still need downloading. */
  allocate(added, removed) {
    for (const id of removed) this.allocation.delete(id);
    const need = [];
    for (const id of added) {
      this.allocation.add(id);
      if (!this.slot.has(id)) need.push(id);
    }
    this._usable = null;
    return need;
  }

  /** Allocated ids not cached yet. */
  missing() {
    const out = [];
    for (const id of this.allocation) if (!this.slot.has(id)) out.push(id);
    return out;
  }

  _grow(min) {
    if (min <= this.capacity) return;
    const cap = Math.max(64, min, this.capacity * 2);
    const pixels = new Uint8Array(cap * this.size);
    pixels.set(this.pixels.subarray(0, this.count * this.size));
    const labels = new Int32Array(cap); labels.set(this.labels.subarray(0, this.count));
    const ids = new Uint32Array(cap); ids.set(this.ids.subarray(0, this.count));
    Object.assign(this, { pixels, labels, ids, capacity: cap });
  }

  /** Add downloaded vectors (accept(i) false: skip vector i); returns the ids newly cached. */
  add(ids, labels, pixels, accept = () => true) {
    const added = [];
    this._grow(this.count + ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (this.slot.has(id) || !accept(i)) continue;
      const row = this.count++;
      this.pixels.set(pixels.subarray(i * this.size, (i + 1) * this.size), row * this.size);
      this.labels[row] = labels[i];
      this.ids[row] = id;
      this.slot.set(id, row);
      added.push(id);
    }
    if (added.length) this._usable = null;
    return added;
  }

  /** Rows usable for computing with a net of `classes` outputs (0: any label). */
  usable(classes = 0) {
    if (this._usable === null || this._usableClasses !== classes) {
      const rows = [];
      for (const id of this.allocation) {
        const row = this.slot.get(id);
        if (row !== undefined && (classes === 0 || this.labels[row] < classes)) rows.push(row);
      }
      this._usable = Int32Array.from(rows);
      this._usableClasses = classes;
    }
    return this._usable;
  }

  /** All cached ids. */
  cachedIds() { return Array.from(this.ids.subarray(0, this.count)); }

  /** Drop cached ids that are not allocated, oldest first, beyond `maxBytes` of them; returns
   * the evicted ids (to report). Rebuilds the arrays (rows are renumbered). */
  evictInactive(maxBytes) {
    const inactive = [];
    for (let row = 0; row < this.count; row++) if (!this.allocation.has(this.ids[row])) inactive.push(row);
    const excess = inactive.length - Math.floor(maxBytes / this.size);
    if (excess <= 0) return [];
    const drop = new Set(inactive.slice(0, excess));
    const evicted = [], keep = [];
    for (let row = 0; row < this.count; row++) (drop.has(row) ? evicted : keep).push(row);
    const pixels = new Uint8Array(Math.max(keep.length, 64) * this.size);
    const labels = new Int32Array(Math.max(keep.length, 64)), ids = new Uint32Array(labels.length);
    keep.forEach((row, i) => {
      pixels.set(this.pixels.subarray(row * this.size, (row + 1) * this.size), i * this.size);
      labels[i] = this.labels[row]; ids[i] = this.ids[row];
    });
    const evictedIds = evicted.map((row) => this.ids[row]);
    this.slot = new Map(Array.from(ids.subarray(0, keep.length), (id, i) => [id, i]));
    Object.assign(this, { pixels, labels, ids, count: keep.length, capacity: labels.length, _usable: null });
    return evictedIds;
  }

  /** Network inputs (pixels / 255 - 0.5, channel-major as stored) and targets of `rows`. */
  fill(rows, x, targets) {
    const size = this.size, pixels = this.pixels;
    for (let i = 0; i < rows.length; i++) {
      const src = rows[i] * size, dst = i * size;
      for (let k = 0; k < size; k++) x[dst + k] = pixels[src + k] / 255 - 0.5;
      targets[i] = this.labels[rows[i]];
    }
  }
}
