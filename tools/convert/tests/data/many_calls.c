/* Many short calls, so that output sizes are measured per call, not per track or name. */
static volatile int sink;

__attribute__((noinline)) void tiny(int i) { sink += i; }

__attribute__((noinline)) void batch(int base) {
    for (int i = 0; i < 100; i++)
        tiny(base + i);
}

int main(void) {
    for (int i = 0; i < 200; i++)
        batch(i * 100);
    return 0;
}
