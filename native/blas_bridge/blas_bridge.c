/*
 * libmlx_serving_blas: the CBLAS entry points that MLX's CPU backend imports, forwarded to an
 * OpenBLAS whose symbols carry a prefix (scipy-openblas32 exports scipy_cblas_sgemm).
 *
 * MLX's Linux CPU wheel links a reference BLAS. Its libmlx.so imports cblas_sgemm,
 * cblas_dgemm and cblas_cgemm as undefined dynamic symbols, so an object that exports those
 * names and sits in the global symbol scope before libmlx.so is loaded wins the lookup.
 * scipy-openblas32 cannot do that itself because of the prefix; this library can.
 *
 * The Python loader (mlx_serving.native_bridge.blas) loads this library RTLD_LOCAL, calls
 * mlx_serving_blas_bind(), and only when that succeeds promotes it to RTLD_GLOBAL. So an
 * unbound forwarder is never reachable from MLX; the abort in unbound() is a last guard.
 *
 * LAPACK is deliberately not forwarded: MLX's LAPACK calls (linalg ops) stay on the bundled
 * reference LAPACK, which is correct and off the serving hot path, and Fortran LAPACK's hidden
 * string-length arguments would make hand-written forwarders an ABI risk for no gain.
 *
 * No OpenBLAS header is needed at build time: the three prototypes below are fixed by the
 * CBLAS standard (LP64: 32-bit int dimensions, which is what the "32" in the wheel name means).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef void (*dgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, double alpha,
                         const double *a, int lda, const double *b, int ldb, double beta,
                         double *c, int ldc);
typedef void (*cgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k,
                         const void *alpha, const void *a, int lda, const void *b, int ldb,
                         const void *beta, void *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef int (*get_threads_fn)(void);
typedef char *(*get_config_fn)(void);

static sgemm_fn real_sgemm;
static dgemm_fn real_dgemm;
static cgemm_fn real_cgemm;
static set_threads_fn real_set_threads;
static get_threads_fn real_get_threads;
static get_config_fn real_get_config;
static void *openblas_handle;

/* Counted so tests can prove MLX's matmuls really arrive here, not at the reference BLAS. */
static unsigned long long gemm_calls;

static char last_error[512];

static void set_error(const char *what, const char *detail) {
  snprintf(last_error, sizeof last_error, "%s: %s", what, detail ? detail : "unknown error");
}

static void *resolve(void *handle, const char *prefix, const char *name) {
  char symbol[128];
  if (snprintf(symbol, sizeof symbol, "%s%s", prefix, name) >= (int)sizeof symbol) {
    set_error("symbol name too long", name);
    return NULL;
  }
  dlerror();
  void *address = dlsym(handle, symbol);
  if (address == NULL) {
    set_error("missing symbol", symbol);
  }
  return address;
}

/*
 * Opens the OpenBLAS at `path` privately and resolves every forwarded function as
 * `prefix` + standard name. Returns 0 on success; on failure nothing is kept and
 * mlx_serving_blas_last_error() says why. Binding twice is a no-op.
 */
EXPORT int mlx_serving_blas_bind(const char *path, const char *prefix) {
  if (openblas_handle != NULL) {
    return 0;
  }
  if (path == NULL || prefix == NULL) {
    set_error("bind", "path and prefix are required");
    return -1;
  }
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) {
    set_error("dlopen failed", dlerror());
    return -1;
  }
  sgemm_fn sgemm = (sgemm_fn)resolve(handle, prefix, "cblas_sgemm");
  dgemm_fn dgemm = (dgemm_fn)resolve(handle, prefix, "cblas_dgemm");
  cgemm_fn cgemm = (cgemm_fn)resolve(handle, prefix, "cblas_cgemm");
  if (sgemm == NULL || dgemm == NULL || cgemm == NULL) {
    dlclose(handle);
    return -2;
  }
  /* Thread control and config are conveniences: a BLAS without them still forwards. */
  real_set_threads = (set_threads_fn)resolve(handle, prefix, "openblas_set_num_threads");
  real_get_threads = (get_threads_fn)resolve(handle, prefix, "openblas_get_num_threads");
  real_get_config = (get_config_fn)resolve(handle, prefix, "openblas_get_config");
  last_error[0] = '\0';
  real_sgemm = sgemm;
  real_dgemm = dgemm;
  real_cgemm = cgemm;
  openblas_handle = handle;
  return 0;
}

EXPORT const char *mlx_serving_blas_last_error(void) { return last_error; }

EXPORT int mlx_serving_blas_is_bound(void) { return openblas_handle != NULL; }

EXPORT unsigned long long mlx_serving_blas_gemm_calls(void) {
  return __atomic_load_n(&gemm_calls, __ATOMIC_RELAXED);
}

/* Returns the thread count OpenBLAS will use, or -1 when unbound or not reported. */
EXPORT int mlx_serving_blas_get_threads(void) {
  return real_get_threads != NULL ? real_get_threads() : -1;
}

EXPORT int mlx_serving_blas_set_threads(int threads) {
  if (real_set_threads == NULL) {
    return -1;
  }
  real_set_threads(threads);
  return 0;
}

EXPORT const char *mlx_serving_blas_config(void) {
  return real_get_config != NULL ? real_get_config() : "";
}

static void unbound(const char *name) {
  fprintf(stderr, "libmlx_serving_blas: %s called before mlx_serving_blas_bind\n", name);
  abort();
}

EXPORT void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc) {
  if (real_sgemm == NULL) {
    unbound("cblas_sgemm");
  }
  __atomic_add_fetch(&gemm_calls, 1, __ATOMIC_RELAXED);
  real_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

EXPORT void cblas_dgemm(int order, int trans_a, int trans_b, int m, int n, int k, double alpha,
                        const double *a, int lda, const double *b, int ldb, double beta,
                        double *c, int ldc) {
  if (real_dgemm == NULL) {
    unbound("cblas_dgemm");
  }
  __atomic_add_fetch(&gemm_calls, 1, __ATOMIC_RELAXED);
  real_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

EXPORT void cblas_cgemm(int order, int trans_a, int trans_b, int m, int n, int k,
                        const void *alpha, const void *a, int lda, const void *b, int ldb,
                        const void *beta, void *c, int ldc) {
  if (real_cgemm == NULL) {
    unbound("cblas_cgemm");
  }
  __atomic_add_fetch(&gemm_calls, 1, __ATOMIC_RELAXED);
  real_cgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
