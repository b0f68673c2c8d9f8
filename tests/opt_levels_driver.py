"""Outputs of a few GRU calls (float32 and float64, dense and packed, forward and gru.vjp's
backward), saved to an .npz or compared bit for bit with one: tests/check_opt_levels.sh runs it
on builds at different optimisation levels.

    python tests/opt_levels_driver.py save|cmp FILE.npz      (CGRU_ISA picks the kernel build)
"""
import sys, numpy as np, cgru
mode, path = sys.argv[1], sys.argv[2]
res = {}
for dtype in (np.float32, np.float64):
    for (L, N, I, H, bi, thr) in [(5, 1, 7, 20, False, 1), (6, 13, 8, 64, True, 2),
                                  (4, 41, 16, 33, False, 1), (3, 300, 12, 48, True, 2),
                                  (7, 9, 5, 130, True, 1)]:
        rng = np.random.default_rng(N)
        gru = cgru.GRU(I, H, 2, bidirectional=bi, dtype=dtype, seed=N)
        x = rng.standard_normal((L, N, I)).astype(dtype)
        lengths = rng.integers(1, L + 1, size=N)
        key = f"{dtype.__name__}_{L}_{N}_{I}_{H}_{bi}_{thr}"
        with cgru.use_threads(thr):
            out, h = gru(x)
            pout, ph = gru(cgru.pack_padded_sequence(x, lengths, enforce_sorted=False))
            res[key + "_out"], res[key + "_h"] = out, h
            res[key + "_pout"], res[key + "_ph"] = np.asarray(pout.data), ph
            if hasattr(gru, "vjp"):
                try:
                    (o2, h2), vjp = gru.vjp(x)
                    g = [vjp(np.ones_like(o2), np.ones_like(h2))]
                    (po, ph2), pvjp = gru.vjp(cgru.pack_padded_sequence(x, lengths, enforce_sorted=False))
                    g.append(pvjp(None, np.ones_like(ph2)))
                    for i, a in enumerate(g if isinstance(g, (tuple, list)) else [g]):
                        if isinstance(a, dict):
                            for k, v in a.items(): res[f"{key}_g{i}_{k}"] = np.asarray(v)
                        elif a is not None: res[f"{key}_g{i}"] = np.asarray(a)
                except Exception as e:
                    print("vjp:", e); raise
if mode == "save":
    np.savez(path, **res); print("saved", len(res))
else:
    ref = np.load(path)
    bad = [k for k in ref if not np.array_equal(ref[k], res[k])]
    print(f"compared {len(ref)} arrays: {len(bad)} differ {bad[:5]}")
    sys.exit(1 if bad else 0)
