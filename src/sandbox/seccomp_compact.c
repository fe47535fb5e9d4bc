/* seccomp_compact.c - the policy as a binary search over runs of syscall
 * numbers, and a classic-BPF interpreter to check it (seccomp_compact.h).
 *
 * Layout of the program:
 *     ld arch;  jeq ARCH ? next : badarch
 *     ld nr;   (x86_64) jge 0x40000000 ? badarch : next      the x32 ABI
 *     the search: one "jge lo" per boundary between runs, in pre-order, so
 *       every jump goes forward; a run's leaf is no instruction at all but a
 *       jump straight to its return or to its argument rule
 *     the argument rules: ld arg (low word); jset mask ? set : next/clear;
 *       ld arg (high word); jset mask ? set : clear   (words the mask uses)
 *     one return per distinct action
 * Jumps carry 8-bit offsets: a program whose jumps would not reach is
 * refused (-E2BIG) and the caller keeps libseccomp's. */
#include "sandbox/seccomp_compact.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A jump target while the program is laid out: an instruction index (>= 0)
 * or a symbol resolved once the rule blocks and returns are placed. */
#define SYM_RET(i) (-1 - (i))                              /* returns[i] */
#define SYM_COND(i) (-1 - SECCOMP_COMPACT_CONDS_MAX * 4 - (i)) /* conds[i] */
#define NRET_MAX (SECCOMP_COMPACT_CONDS_MAX * 4)

struct layout {
    struct sock_filter *out;
    size_t max, len;
    int jt[BPF_MAXINSNS], jf[BPF_MAXINSNS]; /* symbolic targets (INT32_MIN: none) */
    uint32_t rets[NRET_MAX];
    size_t nrets;
    bool overflow;
};

static int ret_sym(struct layout *L, uint32_t action)
{
    for (size_t i = 0; i < L->nrets; i++)
        if (L->rets[i] == action)
            return SYM_RET((int)i);
    if (L->nrets == NRET_MAX) {
        L->overflow = true;
        return SYM_RET(0);
    }
    L->rets[L->nrets] = action;
    return SYM_RET((int)L->nrets++);
}

static size_t emit(struct layout *L, uint16_t code, uint32_t k, int jt, int jf)
{
    if (L->len >= L->max || L->len >= BPF_MAXINSNS) {
        L->overflow = true;
        return L->len;
    }
    L->out[L->len] = (struct sock_filter){code, 0, 0, k};
    L->jt[L->len] = jt;
    L->jf[L->len] = jf;
    return L->len++;
}

/* A run of numbers [lo[i], lo[i+1]) with one target (a return or a rule). */
struct runs {
    size_t k;
    uint32_t lo[SECCOMP_COMPACT_RULES_MAX * 2 + 2];
    int tgt[SECCOMP_COMPACT_RULES_MAX * 2 + 2];
};

/* Emit the search over runs i..j (inclusive); returns where to jump for it:
 * the first instruction of the subtree, or the target itself for one run. */
static int search(struct layout *L, const struct runs *R, size_t i, size_t j)
{
    if (i == j)
        return R->tgt[i];
    size_t mid = (i + j + 1) / 2;
    size_t at = emit(L, BPF_JMP | BPF_JGE | BPF_K, R->lo[mid], 0, 0);
    if (L->overflow)
        return 0;
    L->jt[at] = search(L, R, mid, j);
    L->jf[at] = search(L, R, i, mid - 1);
    return (int)at;
}

static int cmp_idx_nr(const void *a, const void *b, void *arg)
{
    const int *nr = arg;
    int x = nr[*(const size_t *)a], y = nr[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* offsets of the two 32-bit halves of seccomp_data.args[arg] */
static uint32_t arg_lo(int arg)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (size_t)arg);
#else
    return (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (size_t)arg + 4);
#endif
}

static uint32_t arg_hi(int arg)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (size_t)arg + 4);
#else
    return (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (size_t)arg);
#endif
}

int seccomp_compact_build(const struct seccomp_rules *r, struct sock_filter *out, size_t max)
{
    if (!r || !out || r->n > SECCOMP_COMPACT_RULES_MAX || r->nconds > SECCOMP_COMPACT_CONDS_MAX)
        return -EINVAL;
    uint32_t top = r->x32_bit ? 0x40000000u : 0x80000000u; /* numbers at or past: not ours */
    /* every number once, plain or conditional */
    int nrs[SECCOMP_COMPACT_RULES_MAX + SECCOMP_COMPACT_CONDS_MAX];
    int tg[SECCOMP_COMPACT_RULES_MAX + SECCOMP_COMPACT_CONDS_MAX];
    size_t idx[SECCOMP_COMPACT_RULES_MAX + SECCOMP_COMPACT_CONDS_MAX];
    size_t m = 0;
    struct layout *L = calloc(1, sizeof *L);
    if (!L)
        return -ENOMEM;
    L->out = out;
    L->max = max;
    int rc = -EINVAL;
    for (size_t i = 0; i < r->n; i++) {
        nrs[m] = r->nr[i];
        tg[m] = ret_sym(L, r->act[i]);
        m++;
    }
    for (size_t i = 0; i < r->nconds; i++) {
        const struct seccomp_cond *c = &r->conds[i];
        if (c->arg < 0 || c->arg > 5 || c->mask == 0)
            goto out;
        nrs[m] = c->nr;
        tg[m] = SYM_COND((int)i);
        m++;
    }
    for (size_t i = 0; i < m; i++) {
        if (nrs[i] < 0 || (uint32_t)nrs[i] >= top)
            goto out;
        idx[i] = i;
    }
    qsort_r(idx, m, sizeof idx[0], cmp_idx_nr, nrs);
    for (size_t i = 1; i < m; i++)
        if (nrs[idx[i]] == nrs[idx[i - 1]])
            goto out; /* listed twice */

    /* the runs: [0, first) default, each number, the gaps, [last+1, top) default */
    struct runs *R = calloc(1, sizeof *R);
    if (!R) {
        rc = -ENOMEM;
        goto out;
    }
    int dsym = ret_sym(L, r->dflt);
    uint32_t next = 0;
    for (size_t i = 0; i <= m; i++) {
        uint32_t nr = i < m ? (uint32_t)nrs[idx[i]] : top;
        if (nr > next && !(R->k && R->tgt[R->k - 1] == dsym)) {
            R->lo[R->k] = next;
            R->tgt[R->k++] = dsym;
        }
        if (i == m)
            break;
        int t = tg[idx[i]];
        /* the last run reaches up to nr: same target, same run */
        if (!(R->k && R->tgt[R->k - 1] == t)) {
            R->lo[R->k] = nr;
            R->tgt[R->k++] = t;
        }
        next = nr + 1;
    }

    int bad = ret_sym(L, r->badarch);
    emit(L, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
    emit(L, BPF_JMP | BPF_JEQ | BPF_K, r->arch, (int)L->len + 1, bad);
    emit(L, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
    /* the x32 ABI (bit 30) is a foreign arch, except -1, which gets the
     * default as libseccomp has it (a tracer's "skip this call"); on other
     * arches numbers past 2^31 are the default too (BPF compares unsigned) */
    if (r->x32_bit) {
        emit(L, BPF_JMP | BPF_JGE | BPF_K, top, (int)L->len + 1, (int)L->len + 2);
        emit(L, BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, dsym, bad);
    } else {
        emit(L, BPF_JMP | BPF_JGE | BPF_K, top, dsym, (int)L->len + 1);
    }
    size_t before = L->len;
    int first = search(L, R, 0, R->k - 1); /* falls through into its first node */
    free(R);
    if (L->len == before) /* one run only: no node, jump to its target */
        emit(L, BPF_JMP | BPF_JA, 0, first, 0);
    if (L->overflow) {
        rc = -E2BIG;
        goto out;
    }

    /* the argument rules */
    int cond_at[SECCOMP_COMPACT_CONDS_MAX];
    for (size_t i = 0; i < r->nconds; i++) {
        const struct seccomp_cond *c = &r->conds[i];
        uint32_t mlo = (uint32_t)c->mask, mhi = (uint32_t)(c->mask >> 32);
        int set = ret_sym(L, c->if_set), clear = ret_sym(L, c->if_clear);
        cond_at[i] = (int)L->len;
        if (mlo) {
            emit(L, BPF_LD | BPF_W | BPF_ABS, arg_lo(c->arg), 0, 0);
            emit(L, BPF_JMP | BPF_JSET | BPF_K, mlo, set, mhi ? (int)L->len + 1 : clear);
        }
        if (mhi) {
            emit(L, BPF_LD | BPF_W | BPF_ABS, arg_hi(c->arg), 0, 0);
            emit(L, BPF_JMP | BPF_JSET | BPF_K, mhi, set, clear);
        }
    }
    /* the returns */
    int ret_at[NRET_MAX];
    for (size_t i = 0; i < L->nrets; i++)
        ret_at[i] = (int)emit(L, BPF_RET | BPF_K, L->rets[i], 0, 0);
    if (L->overflow) {
        rc = -E2BIG;
        goto out;
    }

    /* resolve the targets into offsets */
    for (size_t pc = 0; pc < L->len; pc++) {
        struct sock_filter *f = &L->out[pc];
        if (BPF_CLASS(f->code) != BPF_JMP)
            continue;
        int t[2] = {L->jt[pc], L->jf[pc]};
        long off[2];
        for (int s = 0; s < 2; s++) {
            int a = t[s];
            if (a <= SYM_COND(0))
                a = cond_at[SYM_COND(0) - a];
            else if (a < 0)
                a = ret_at[SYM_RET(0) - a];
            off[s] = (long)a - (long)pc - 1;
        }
        if (BPF_OP(f->code) == BPF_JA) {
            if (off[0] < 0) {
                rc = -E2BIG;
                goto out;
            }
            f->k = (uint32_t)off[0]; /* the target is kept in jt */
            continue;
        }
        if (off[0] < 0 || off[0] > 255 || off[1] < 0 || off[1] > 255) {
            rc = -E2BIG;
            goto out;
        }
        f->jt = (uint8_t)off[0];
        f->jf = (uint8_t)off[1];
    }
    rc = (int)L->len;
out:
    free(L);
    return rc;
}

/* ---- the interpreter ----------------------------------------------------- */

uint32_t seccomp_bpf_run(const struct sock_filter *p, size_t len, const struct seccomp_data *d,
                         bool *ok)
{
    uint32_t A = 0, X = 0, mem[BPF_MEMWORDS] = {0};
    *ok = false;
    if (!p || len == 0 || len > BPF_MAXINSNS)
        return 0;
    for (size_t pc = 0; pc < len; pc++) {
        const struct sock_filter *f = &p[pc];
        uint32_t k = f->k;
        uint32_t src = BPF_SRC(f->code) == BPF_X ? X : k;
        switch (BPF_CLASS(f->code)) {
        case BPF_LD:
            if (f->code == (BPF_LD | BPF_W | BPF_ABS)) {
                if (k % 4 || k > sizeof *d - 4)
                    return 0;
                memcpy(&A, (const char *)d + k, 4);
            } else if (f->code == (BPF_LD | BPF_IMM)) {
                A = k;
            } else if (f->code == (BPF_LD | BPF_MEM) && k < BPF_MEMWORDS) {
                A = mem[k];
            } else if (f->code == (BPF_LD | BPF_W | BPF_LEN)) {
                A = (uint32_t)sizeof *d;
            } else {
                return 0;
            }
            break;
        case BPF_LDX:
            if (f->code == (BPF_LDX | BPF_IMM))
                X = k;
            else if (f->code == (BPF_LDX | BPF_MEM) && k < BPF_MEMWORDS)
                X = mem[k];
            else if (f->code == (BPF_LDX | BPF_W | BPF_LEN))
                X = (uint32_t)sizeof *d;
            else
                return 0;
            break;
        case BPF_ST:
        case BPF_STX:
            if (k >= BPF_MEMWORDS)
                return 0;
            mem[k] = BPF_CLASS(f->code) == BPF_ST ? A : X;
            break;
        case BPF_ALU:
            switch (BPF_OP(f->code)) {
            case BPF_ADD: A += src; break;
            case BPF_SUB: A -= src; break;
            case BPF_MUL: A *= src; break;
            case BPF_DIV:
                if (!src)
                    return *ok = true, 0; /* the kernel's filter returns 0 */
                A /= src;
                break;
            case BPF_MOD:
                if (!src)
                    return *ok = true, 0;
                A %= src;
                break;
            case BPF_AND: A &= src; break;
            case BPF_OR: A |= src; break;
            case BPF_XOR: A ^= src; break;
            case BPF_LSH: A = src < 32 ? A << src : 0; break;
            case BPF_RSH: A = src < 32 ? A >> src : 0; break;
            case BPF_NEG: A = (uint32_t)-A; break;
            default: return 0;
            }
            break;
        case BPF_JMP: {
            if (BPF_OP(f->code) == BPF_JA) {
                if (k >= len - pc - 1)
                    return 0;
                pc += k;
                break;
            }
            bool t;
            switch (BPF_OP(f->code)) {
            case BPF_JEQ: t = A == src; break;
            case BPF_JGT: t = A > src; break;
            case BPF_JGE: t = A >= src; break;
            case BPF_JSET: t = (A & src) != 0; break;
            default: return 0;
            }
            size_t off = t ? f->jt : f->jf;
            if (off >= len - pc - 1)
                return 0;
            pc += off;
            break;
        }
        case BPF_RET:
            if (BPF_RVAL(f->code) == BPF_K)
                return *ok = true, k;
            if (BPF_RVAL(f->code) == BPF_A)
                return *ok = true, A;
            return 0;
        case BPF_MISC:
            if (BPF_MISCOP(f->code) == BPF_TAX)
                X = A;
            else if (BPF_MISCOP(f->code) == BPF_TXA)
                A = X;
            else
                return 0;
            break;
        default:
            return 0;
        }
    }
    return 0; /* fell off the end */
}

/* ---- equivalence --------------------------------------------------------- */

struct eq {
    const struct sock_filter *a, *b;
    size_t alen, blen;
    char *why;
    size_t whylen;
};

/* 1 same, 0 differ (why filled), -EINVAL malformed */
static int same(struct eq *e, const struct seccomp_data *d)
{
    bool oka, okb;
    uint32_t ra = seccomp_bpf_run(e->a, e->alen, d, &oka);
    uint32_t rb = seccomp_bpf_run(e->b, e->blen, d, &okb);
    if (!oka || !okb) {
        if (e->why)
            snprintf(e->why, e->whylen, "program %s is malformed", oka ? "b" : "a");
        return -EINVAL;
    }
    if (ra == rb)
        return 1;
    if (e->why)
        snprintf(e->why, e->whylen,
                 "arch 0x%08x nr %d args 0x%llx 0x%llx 0x%llx 0x%llx 0x%llx 0x%llx: "
                 "0x%08x against 0x%08x",
                 d->arch, d->nr, (unsigned long long)d->args[0], (unsigned long long)d->args[1],
                 (unsigned long long)d->args[2], (unsigned long long)d->args[3],
                 (unsigned long long)d->args[4], (unsigned long long)d->args[5], ra, rb);
    return 0;
}

static int probe_plain(struct eq *e, uint32_t arch, uint32_t nr)
{
    static const uint64_t fill[] = {0, ~0ull, 0x5555555555555555ull};
    for (size_t f = 0; f < sizeof fill / sizeof fill[0]; f++) {
        struct seccomp_data d = {.nr = (int)nr, .arch = arch, .instruction_pointer = fill[f]};
        for (int i = 0; i < 6; i++)
            d.args[i] = fill[f];
        int rc = same(e, &d);
        if (rc != 1)
            return rc;
    }
    return 1;
}

int seccomp_bpf_equivalent(const struct sock_filter *a, size_t alen, const struct sock_filter *b,
                           size_t blen, const struct seccomp_rules *r, char *why, size_t whylen)
{
    struct eq e = {a, b, alen, blen, why, whylen};
    int rc;
    /* every number that can be a syscall here, and the x32 range */
    for (uint32_t nr = 0; nr < SECCOMP_COMPACT_NR_CHECK; nr++) {
        if ((rc = probe_plain(&e, r->arch, nr)) != 1)
            return rc;
        if ((rc = probe_plain(&e, r->arch, 0x40000000u + nr)) != 1)
            return rc;
    }
    static const uint32_t edges[] = {0x3fffffffu, 0x7ffffffeu, 0x7fffffffu, 0x80000000u,
                                     0xbfffffffu, 0xc0000000u, 0xfffffffeu, 0xffffffffu};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        if ((rc = probe_plain(&e, r->arch, edges[i])) != 1)
            return rc;
    /* foreign architectures */
    const uint32_t arches[] = {0, 0xffffffffu, r->arch ^ 1u, r->arch ^ 0x80000000u,
                               0x40000003u /* AUDIT_ARCH_I386 */};
    const uint32_t some[] = {0, 1, 2, 59, 0x40000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
        for (size_t j = 0; arches[i] != r->arch && j < sizeof some / sizeof some[0]; j++)
            if ((rc = probe_plain(&e, arches[i], some[j])) != 1)
                return rc;
    /* argument rules: every single bit, the mask, its complement, 0 and ~0,
     * with the other arguments zero and all ones */
    for (size_t c = 0; c < r->nconds; c++) {
        const struct seccomp_cond *k = &r->conds[c];
        uint64_t vals[64 + 4];
        size_t nv = 0;
        for (int bit = 0; bit < 64; bit++)
            vals[nv++] = 1ull << bit;
        vals[nv++] = 0;
        vals[nv++] = ~0ull;
        vals[nv++] = k->mask;
        vals[nv++] = ~k->mask;
        for (size_t v = 0; v < nv; v++) {
            for (int others = 0; others < 2; others++) {
                struct seccomp_data d = {.nr = k->nr, .arch = r->arch};
                for (int i = 0; i < 6; i++)
                    d.args[i] = others ? ~0ull : 0;
                d.args[k->arg] = vals[v];
                if ((rc = same(&e, &d)) != 1)
                    return rc;
            }
        }
    }
    return 1;
}
