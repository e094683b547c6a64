"""Small programming problems for the test-case pipeline: statements, input generators, submissions.

Each problem has a generator program (reads a seed on stdin, prints one test input: the role the
paper gives to a CYaRon script) and ten submissions, most correct, some deliberately wrong, so the
pipeline's thresholds have something to decide (k15/curation/testcases.py):

    sum_list, reverse_words            all ten correct                              -> kept
    count_distinct, gcd_list, count_primes   one wrong submission (9/10 pass)       -> kept
    fib_mod        four submissions recurse too deep on the large inputs (every 10th seed), so
                   those tests lack 7/10 agreement and are dropped; all pass the rest -> kept
    max_subarray   two wrong (8/10 pass)                                            -> dropped
    second_largest three wrong (7/10 pass)                                          -> dropped
    most_frequent  ties are not broken by the statement: the submissions disagree on
                   many inputs, so too few tests are valid                          -> dropped
    any_arrangement  many outputs are right: needs a special judge                  -> dropped

Everything is deterministic: generators are seeded, and programs run with PYTHONHASHSEED=0.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

FORMAT = ("Write a Python 3 program that reads from standard input and writes to standard output. "
          "Put the whole program in the answer block.")
LIST_INPUT = "The first line holds n, the second line n integers separated by spaces."


@dataclass(frozen=True)
class CodeProblem:
    name: str
    statement: str
    difficulty: int
    generator: str
    submissions: tuple[str, ...]
    wrong: frozenset[int] = frozenset()  # indices of the deliberately wrong submissions (for readers and tests)
    special_judge: bool = False  # several outputs are right: comparing stdout cannot judge it

    @property
    def prompt(self) -> str:
        return f"{self.statement}\n{FORMAT}"


def src(text: str) -> str:
    """A program written as an indented triple-quoted string, as plain source."""
    return textwrap.dedent(text).lstrip("\n")


def gen(body: str) -> str:
    return "import random\nseed = int(input())\nr = random.Random(seed)\n" + src(body)


SUM_LIST = CodeProblem("sum_list", f"{LIST_INPUT} Print their sum.", 1, gen("""
    n = r.randint(1, 20)
    print(n)
    print(*[r.randint(-100, 100) for _ in range(n)])
"""), tuple(map(src, [
    """
    input()
    print(sum(map(int, input().split())))
    """, """
    import sys
    data = sys.stdin.read().split()
    print(sum(int(x) for x in data[1:]))
    """, """
    n = int(input())
    xs = list(map(int, input().split()))
    total = 0
    for x in xs:
        total += x
    print(total)
    """, """
    import sys
    lines = sys.stdin.read().splitlines()
    print(sum(map(int, lines[1].split())))
    """, """
    input()
    print(eval('+'.join(input().split())))
    """, """
    from functools import reduce
    input()
    print(reduce(lambda a, b: a + b, map(int, input().split())))
    """, """
    import sys
    n, *xs = map(int, sys.stdin.read().split())
    print(sum(xs[:n]))
    """, """
    n = int(input())
    s = 0
    for tok in input().split():
        s = s + int(tok)
    print(s)
    """, """
    input()
    xs = [int(t) for t in input().split()]
    print(sum(xs) if xs else 0)
    """, """
    import sys
    sys.stdin.readline()
    sys.stdout.write(str(sum(map(int, sys.stdin.readline().split()))) + '\\n')
    """,
])))

REVERSE_WORDS = CodeProblem(
    "reverse_words",
    "One line of lowercase words separated by single spaces. Print the words in reverse order, separated by single spaces.",
    1, gen("""
    words = [''.join(r.choice('abcdefgh') for _ in range(r.randint(1, 5))) for _ in range(r.randint(1, 8))]
    print(' '.join(words))
"""), tuple(map(src, [
    """
    print(' '.join(input().split()[::-1]))
    """, """
    print(*reversed(input().split()))
    """, """
    words = input().split(' ')
    words.reverse()
    print(' '.join(words))
    """, """
    import sys
    print(' '.join(reversed(sys.stdin.readline().split())))
    """, """
    w = input().split()
    out = []
    while w:
        out.append(w.pop())
    print(' '.join(out))
    """, """
    w = input().split()
    for x in w[::-1]:
        print(x, end=' ')  # a trailing space: judges ignore it
    print()
    """, """
    s = input().split()
    print(' '.join(s[i] for i in range(len(s) - 1, -1, -1)))
    """, """
    import sys
    sys.stdout.write(' '.join(sys.stdin.read().split()[::-1]) + '\\n')
    """, """
    line = input().strip()
    print(' '.join(line.split()[::-1]))
    """, """
    from collections import deque
    d = deque()
    for x in input().split():
        d.appendleft(x)
    print(' '.join(d))
    """,
])))

COUNT_DISTINCT = CodeProblem("count_distinct", f"{LIST_INPUT} Print how many distinct values there are.", 1, gen("""
    n = r.randint(1, 20)
    print(n)
    print(*[r.randint(0, 9) for _ in range(n)])
"""), tuple(map(src, [
    """
    input()
    print(len(set(input().split())))
    """, """
    input()
    print(len(set(map(int, input().split()))))
    """, """
    import sys
    print(len(set(sys.stdin.read().split()[1:])))
    """, """
    input()
    seen = []
    for x in input().split():
        if x not in seen:
            seen.append(x)
    print(len(seen))
    """, """
    from collections import Counter
    input()
    print(len(Counter(input().split())))
    """, """
    input()
    xs = sorted(map(int, input().split()))
    print(1 + sum(1 for a, b in zip(xs, xs[1:]) if a != b))
    """, """
    input()
    print(len(dict.fromkeys(input().split())))
    """, """
    input()
    flags = [False] * 10
    for x in map(int, input().split()):
        flags[x] = True
    print(sum(flags))
    """, """
    n = int(input())
    xs = input().split()
    print(sum(1 for i in range(n) if xs[i] not in xs[:i]))
    """, """
    # wrong: counts runs of equal neighbours, right only when equal values are adjacent
    input()
    xs = input().split()
    print(1 + sum(1 for a, b in zip(xs, xs[1:]) if a != b))
    """,
])), wrong=frozenset({9}))

GCD_LIST = CodeProblem("gcd_list", f"{LIST_INPUT} All are positive. Print their greatest common divisor.", 2, gen("""
    n = r.randint(1, 10)
    g = r.randint(1, 12)
    print(n)
    print(*[g * r.randint(1, 20) for _ in range(n)])
"""), tuple(map(src, [
    """
    import math
    input()
    print(math.gcd(*map(int, input().split())))
    """, """
    from math import gcd
    from functools import reduce
    input()
    print(reduce(gcd, map(int, input().split())))
    """, """
    def g(a, b):
        while b:
            a, b = b, a % b
        return a
    input()
    r = 0
    for x in map(int, input().split()):
        r = g(r, x)
    print(r)
    """, """
    input()
    xs = list(map(int, input().split()))
    d = min(xs)
    while any(x % d for x in xs):
        d -= 1
    print(d)
    """, """
    import sys
    import math
    n, *xs = map(int, sys.stdin.read().split())
    print(math.gcd(*xs))
    """, """
    def g(a, b):
        return a if b == 0 else g(b, a % b)
    input()
    xs = list(map(int, input().split()))
    r = xs[0]
    for x in xs[1:]:
        r = g(r, x)
    print(r)
    """, """
    input()
    xs = list(map(int, input().split()))
    print(max(d for d in range(1, min(xs) + 1) if all(x % d == 0 for x in xs)))
    """, """
    import math
    input()
    r = 0
    for x in input().split():
        r = math.gcd(r, int(x))
    print(r)
    """, """
    from math import gcd
    input()
    xs = list(map(int, input().split()))
    while len(xs) > 1:
        xs.append(gcd(xs.pop(), xs.pop()))
    print(xs[0])
    """, """
    # wrong: only the first two numbers (and crashes when n = 1)
    from math import gcd
    input()
    xs = list(map(int, input().split()))
    print(gcd(xs[0], xs[1]))
    """,
])), wrong=frozenset({9}))

COUNT_PRIMES = CodeProblem(
    "count_primes", "One integer n (1 <= n <= 2000). Print how many prime numbers are at most n.", 2, gen("""
    print(r.randint(1, 12) if seed % 3 == 0 else r.randint(1, 2000))
"""), tuple(map(src, [
    """
    n = int(input())
    print(sum(1 for k in range(2, n + 1) if all(k % d for d in range(2, int(k ** 0.5) + 1))))
    """, """
    n = int(input())
    s = [True] * (n + 1)
    s[0] = False
    if n >= 1:
        s[1] = False
    for i in range(2, n + 1):
        if s[i]:
            for j in range(i * i, n + 1, i):
                s[j] = False
    print(sum(s))
    """, """
    def p(k):
        if k < 2:
            return False
        d = 2
        while d * d <= k:
            if k % d == 0:
                return False
            d += 1
        return True
    print(len([k for k in range(int(input()) + 1) if p(k)]))
    """, """
    n = int(input())
    primes = []
    for k in range(2, n + 1):
        if all(k % q for q in primes if q * q <= k):
            primes.append(k)
    print(len(primes))
    """, """
    import sys
    n = int(sys.stdin.read())
    c = 0
    for k in range(2, n + 1):
        for d in range(2, k):
            if k % d == 0:
                break
        else:
            c += 1
    print(c)
    """, """
    n = int(input())
    sieve = bytearray([1]) * (n + 1)
    sieve[:2] = b'\\x00\\x00'[: n + 1]
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    print(sum(sieve))
    """, """
    n = int(input())
    print(sum(1 for k in range(2, n + 1) if not any(k % d == 0 for d in range(2, k))))
    """, """
    n = int(input())
    composite = {a * b for a in range(2, n + 1) for b in range(2, n // a + 1)}
    print(len(set(range(2, n + 1)) - composite))
    """, """
    n = int(input())
    c = 0
    k = 2
    while k <= n:
        c += all(k % d for d in range(2, int(k ** 0.5) + 1))
        k += 1
    print(c)
    """, """
    # wrong: primes below n, not at most n (differs exactly when n is prime)
    n = int(input())
    print(sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k ** 0.5) + 1))))
    """,
])), wrong=frozenset({9}))

FIB_MOD = CodeProblem(
    "fib_mod",
    "One integer n (0 <= n <= 3000). Print the n-th Fibonacci number (F(0) = 0, F(1) = 1) modulo 1000000007.", 2, gen("""
    print(r.randint(1200, 3000) if seed % 10 == 9 else r.randint(0, 900))
"""), tuple(map(src, [
    """
    a, b = 0, 1
    for _ in range(int(input())):
        a, b = b, (a + b) % 1000000007
    print(a)
    """, """
    n = int(input())
    f = [0, 1]
    for i in range(2, n + 1):
        f.append((f[-1] + f[-2]) % 1000000007)
    print(f[n])
    """, """
    M = 1000000007
    def mul(x, y):
        return [[(x[0][0] * y[0][0] + x[0][1] * y[1][0]) % M, (x[0][0] * y[0][1] + x[0][1] * y[1][1]) % M],
                [(x[1][0] * y[0][0] + x[1][1] * y[1][0]) % M, (x[1][0] * y[0][1] + x[1][1] * y[1][1]) % M]]
    n = int(input())
    r, m = [[1, 0], [0, 1]], [[1, 1], [1, 0]]
    while n:
        if n & 1:
            r = mul(r, m)
        m = mul(m, m)
        n >>= 1
    print(r[0][1])
    """, """
    a, b = 0, 1
    n = int(input())
    while n > 0:
        a, b = b, a + b
        n -= 1
    print(a % 1000000007)
    """, """
    import sys
    n = int(sys.stdin.readline())
    x, y = 0, 1
    for _ in range(n):
        x, y = y, x + y
    print(x % (10 ** 9 + 7))
    """, """
    n = int(input())
    f = [0] * (n + 2)
    f[1] = 1
    for i in range(2, n + 1):
        f[i] = (f[i - 1] + f[i - 2]) % 1000000007
    print(f[n])
    """, """
    # correct, but recursion depth grows with n: RecursionError on the large inputs
    memo = {}
    def f(n):
        if n < 2:
            return n
        if n in memo:
            return memo[n]
        memo[n] = (f(n - 1) + f(n - 2)) % 1000000007
        return memo[n]
    print(f(int(input())))
    """, """
    # deep recursion, like the one above
    def f(n, memo={0: 0, 1: 1}):
        if n not in memo:
            memo[n] = (f(n - 1, memo) + f(n - 2, memo)) % 1000000007
        return memo[n]
    print(f(int(input())))
    """, """
    # deep recursion, like the one above
    memo = {0: 0, 1: 1}
    def f(n):
        if n not in memo:
            memo[n] = (f(n - 1) + f(n - 2)) % 1000000007
        return memo[n]
    print(f(int(input())))
    """, """
    # deep recursion, with a limit that is still too low for the large inputs
    import sys
    sys.setrecursionlimit(1100)
    memo = [None] * 5000
    def f(n):
        if n < 2:
            return n
        if memo[n] is None:
            memo[n] = (f(n - 1) + f(n - 2)) % 1000000007
        return memo[n]
    print(f(int(input())))
    """,
])))

MAX_SUBARRAY = CodeProblem(
    "max_subarray", f"{LIST_INPUT} Print the largest sum of a non-empty run of consecutive numbers.", 3, gen("""
    n = r.randint(1, 15)
    lo, hi = (-20, -1) if seed % 4 == 0 else (-20, 20)
    print(n)
    print(*[r.randint(lo, hi) for _ in range(n)])
"""), tuple(map(src, [
    """
    input()
    best = cur = None
    for x in map(int, input().split()):
        cur = x if cur is None or cur < 0 else cur + x
        best = cur if best is None else max(best, cur)
    print(best)
    """, """
    n = int(input())
    xs = list(map(int, input().split()))
    print(max(sum(xs[i:j]) for i in range(n) for j in range(i + 1, n + 1)))
    """, """
    input()
    xs = list(map(int, input().split()))
    best = cur = xs[0]
    for x in xs[1:]:
        cur = max(x, cur + x)
        best = max(best, cur)
    print(best)
    """, """
    n = int(input())
    xs = list(map(int, input().split()))
    pre = [0]
    for x in xs:
        pre.append(pre[-1] + x)
    print(max(pre[j] - pre[i] for i in range(n) for j in range(i + 1, n + 1)))
    """, """
    import sys
    n, *xs = map(int, sys.stdin.read().split())
    best = -10 ** 9
    for i in range(n):
        s = 0
        for j in range(i, n):
            s += xs[j]
            best = max(best, s)
    print(best)
    """, """
    input()
    xs = list(map(int, input().split()))
    best, lowest, run = xs[0], 0, 0
    for x in xs:
        run += x
        best = max(best, run - lowest)
        lowest = min(lowest, run)
    print(best)
    """, """
    n = int(input())
    xs = list(map(int, input().split()))
    dp = xs[:]
    for i in range(1, n):
        dp[i] = max(xs[i], dp[i - 1] + xs[i])
    print(max(dp))
    """, """
    from itertools import accumulate
    input()
    xs = list(map(int, input().split()))
    best = max(xs)
    for i in range(len(xs)):
        best = max(best, max(accumulate(xs[i:])))
    print(best)
    """, """
    # wrong: the empty run counts, so all-negative inputs give 0
    input()
    best = cur = 0
    for x in map(int, input().split()):
        cur = max(0, cur + x)
        best = max(best, cur)
    print(best)
    """, """
    # wrong: never looks at runs that end at the last number
    n = int(input())
    xs = list(map(int, input().split()))
    print(max([sum(xs[i:j]) for i in range(n) for j in range(i + 1, n)] or [xs[0]]))
    """,
])), wrong=frozenset({8, 9}))

SECOND_LARGEST = CodeProblem(
    "second_largest",
    f"{LIST_INPUT} Print the second largest distinct value, or none if there is no such value.", 2, gen("""
    n = r.randint(1, 8)
    print(n)
    print(*[r.randint(-5, 5) for _ in range(n)])
"""), tuple(map(src, [
    """
    input()
    xs = sorted(set(map(int, input().split())))
    print(xs[-2] if len(xs) > 1 else 'none')
    """, """
    input()
    xs = set(map(int, input().split()))
    m = max(xs)
    xs.discard(m)
    print(max(xs) if xs else 'none')
    """, """
    import sys
    xs = sorted(set(map(int, sys.stdin.read().split()[1:])), reverse=True)
    print(xs[1] if len(xs) >= 2 else 'none')
    """, """
    input()
    first = second = None
    for x in map(int, input().split()):
        if first is None or x > first:
            first, second = x, first
        elif x != first and (second is None or x > second):
            second = x
    print('none' if second is None else second)
    """, """
    input()
    xs = list(map(int, input().split()))
    rest = [x for x in xs if x != max(xs)]
    print(max(rest) if rest else 'none')
    """, """
    import heapq
    input()
    xs = heapq.nlargest(2, set(map(int, input().split())))
    print(xs[1] if len(xs) == 2 else 'none')
    """, """
    input()
    d = sorted(dict.fromkeys(map(int, input().split())))
    print('none' if len(d) < 2 else d[len(d) - 2])
    """, """
    # wrong: duplicates of the maximum count as the second largest
    input()
    xs = sorted(map(int, input().split()))
    print(xs[-2] if len(xs) > 1 else 'none')
    """, """
    # wrong: crashes when there is no second value
    input()
    print(sorted(set(map(int, input().split())))[-2])
    """, """
    # wrong: prints the largest when there is no second value
    input()
    xs = sorted(set(map(int, input().split())))
    print(xs[-2] if len(xs) > 1 else xs[0])
    """,
])), wrong=frozenset({7, 8, 9}))

_MODE = src("""
    from collections import Counter
    input()
    xs = list(map(int, input().split()))
    c = Counter(xs)
    top = max(c.values())
""")
MOST_FREQUENT = CodeProblem("most_frequent", f"{LIST_INPUT} Print the value that occurs most often.", 2, gen("""
    n = r.randint(2, 8)
    print(n)
    print(*[r.randint(0, 3) for _ in range(n)])
"""), (  # ties broken four different ways
    *[_MODE + "print(min(v for v in c if c[v] == top))\n"] * 3,
    *[_MODE + "print(max(v for v in c if c[v] == top))\n"] * 3,
    *[_MODE + "print(next(v for v in xs if c[v] == top))\n"] * 2,
    *[_MODE + "print([v for v in xs if c[v] == top][-1])\n"] * 2,
))

ANY_ARRANGEMENT = CodeProblem(
    "any_arrangement",
    "One integer n (4 <= n <= 20). Print any order of the numbers 1..n in which neighbours differ by more than 1.", 2, gen("""
    print(r.randint(4, 20))
"""), tuple(map(src, [
    """
    n = int(input())
    print(*(list(range(2, n + 1, 2)) + list(range(1, n + 1, 2))))
    """, """
    n = int(input())
    print(*(list(range(n - 1, 0, -2)) + list(range(n, 0, -2))))
    """,
])), special_judge=True)

CODE_PROBLEMS: tuple[CodeProblem, ...] = (
    SUM_LIST, REVERSE_WORDS, COUNT_DISTINCT, GCD_LIST, COUNT_PRIMES, FIB_MOD,
    MAX_SUBARRAY, SECOND_LARGEST, MOST_FREQUENT, ANY_ARRANGEMENT,
)
