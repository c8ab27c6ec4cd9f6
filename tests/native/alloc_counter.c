/* LD_PRELOAD malloc interposer for the tests: counts allocator calls made by
 * one watched thread (kernel tid). glibc >= 2.34 has no __malloc_hook, so the
 * public entry points are wrapped and forwarded to glibc's __libc_* ones
 * (dlsym would allocate and recurse). operator new ends in malloc.
 *
 *   gcc -shared -fPIC -O2 -o liballoc_counter.so alloc_counter.c
 *   LD_PRELOAD=./liballoc_counter.so python ...
 *   ctypes.CDLL(None).mxrc_alloc_watch(tid); ...; ctypes.CDLL(None).mxrc_alloc_count()
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void __libc_free(void*);
extern void* __libc_memalign(size_t, size_t);

static _Atomic int watched_tid = 0;
static _Atomic unsigned long calls = 0;
static __thread __attribute__((tls_model("initial-exec"))) int my_tid = 0;

static inline void note(void) {
  int w = atomic_load_explicit(&watched_tid, memory_order_relaxed);
  if (w == 0) return;
  if (my_tid == 0) my_tid = (int)syscall(SYS_gettid);
  if (my_tid == w) atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
}

void* malloc(size_t n) {
  note();
  return __libc_malloc(n);
}
void* calloc(size_t a, size_t b) {
  note();
  return __libc_calloc(a, b);
}
void* realloc(void* p, size_t n) {
  note();
  return __libc_realloc(p, n);
}
void free(void* p) {
  if (p != NULL) note();
  __libc_free(p);
}
void* memalign(size_t align, size_t n) {
  note();
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) {
  note();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  note();
  void* p = __libc_memalign(align, n);
  if (p == NULL) return 12; /* ENOMEM */
  *out = p;
  return 0;
}

/* Start counting the calls of thread `tid` (0: stop counting); resets the count. */
void mxrc_alloc_watch(int tid) {
  atomic_store(&calls, 0);
  atomic_store(&watched_tid, tid);
}

unsigned long mxrc_alloc_count(void) { return atomic_load(&calls); }
