// A small seedable generator: xoshiro128** for uniforms, Box-Muller for normals. The engine
// draws initial weights and dropout masks from it; it does not reproduce numpy's streams (a
// browser worker receives its parameters from the master, so only the distribution matters).

export class Random {
  constructor(seed = null) {
    let s = seed === null ? Math.floor(Math.random() * 2 ** 32) : seed >>> 0;
    const next = () => { // splitmix32 to spread the seed over the four words
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
    this.spare = null;
    this.random = this.random.bind(this);
    this.normal = this.normal.bind(this);
  }

  /** Uniform in [0, 1), 32 random bits. */
  random() {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result / 4294967296;
  }

  /** Standard normal. */
  normal() {
    if (this.spare !== null) { const v = this.spare; this.spare = null; return v; }
    let u = 0;
    while (u === 0) u = this.random();
    const r = Math.sqrt(-2 * Math.log(u)), theta = 2 * Math.PI * this.random();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

const rotl = (x, k) => (x << k) | (x >>> (32 - k));
