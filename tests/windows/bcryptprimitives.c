/*
 * bcryptprimitives.dll for Wine 8, which lacks it: a patch to Wine for the tests, not
 * part of dynip, and never to be shipped with it.
 *
 * Rust's standard library (1.78 and later) takes its randomness from ProcessPrng in
 * bcryptprimitives.dll, which Windows 10 and later always have. Wine 8 (Debian 12's)
 * has no such DLL, so any Rust program fails to start under it with status c0000135
 * (STATUS_DLL_NOT_FOUND). Put beside dynip.exe in a Wine prefix, this DLL supplies that
 * one function over RtlGenRandom (SystemFunction036 in advapi32.dll), Wine's own
 * generator. On real Windows it must not sit beside dynip.exe: the loader looks in the
 * program's directory first and would take it over the system's DLL.
 *
 * tests/it/windows.rs builds it, with:
 *   x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom: exported by advapi32.dll as SystemFunction036; no import library
   declares it under its own name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills data with cbData random bytes. Always succeeds, as Windows documents it (a
   failure of the underlying generator is fatal there, so it is here). */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData)
{
    while (cbData > 0) {
        /* RtlGenRandom takes a 32-bit length; ProcessPrng a pointer-sized one. */
        ULONG chunk = cbData > 0x10000000 ? 0x10000000 : (ULONG)cbData;
        if (!SystemFunction036(pbData, chunk)) {
            RaiseFailFastException(NULL, NULL, 0);
        }
        pbData += chunk;
        cbData -= chunk;
    }
    return TRUE;
}
