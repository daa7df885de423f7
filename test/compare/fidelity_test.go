package compare_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/policy"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/vmtest"
)

// fidelitySeeds are policies written for this test from the grammar in
// ipe-reference.md §1, valid and not; the comment after each says what it
// exercises. Mutants are derived from them.
var fidelitySeeds = []string{
	"policy_name=fid_ok policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=fid_ops policy_version=1.2.3\nDEFAULT op=EXECUTE action=DENY\nDEFAULT op=FIRMWARE action=DENY\nDEFAULT op=KMODULE action=DENY\nDEFAULT op=KEXEC_IMAGE action=DENY\nDEFAULT op=KEXEC_INITRAMFS action=DENY\nDEFAULT op=POLICY action=DENY\nDEFAULT op=X509_CERT action=DENY\n", // all per-op defaults, no global
	"policy_name=fid_props policy_version=65535.0.7\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE dmverity_signature=FALSE fsverity_signature=TRUE action=DENY\nop=KMODULE dmverity_roothash=sha256:ABcd01 fsverity_digest=sha512: action=ALLOW\n",
	"# leading comment\n\n  policy_name=fid_ws\tpolicy_version=+01.002.0003   \r\n\tDEFAULT\taction=ALLOW\xa0\n", // whitespace, CR, 0xA0, leading zeros, plus sign
	"policy_name=fid_hash policy_version=0.0.1 # comment\nDEFAULT action=ALLOW # trailing\n",
	"policy_name=fid_nul policy_version=0.0.1\nDEFAULT action=ALLOW\n\x00garbage after NUL\n",
	"policy_name=fid_alg policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=:00 action=ALLOW\nop=EXECUTE fsverity_digest=weird\xffalg:aa action=DENY\n", // empty and odd algorithm names
	"policy_name=fid_dup policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE boot_verified=FALSE action=ALLOW\n",
	"policy_name=fid_late_default policy_version=0.0.1\nop=EXECUTE boot_verified=TRUE action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nDEFAULT action=ALLOW\n",
	"policy_name=test\xff\xef policy_version=0.0.1\nDEFAULT action=ALLOW\n", // expanded ascii name
	"policy_name=fid_crlf policy_version=0.0.1\r\nDEFAULT action=ALLOW\r\nop=KEXEC_INITRAMFS action=DENY\r\n",
	"policy_name=fid_six policy_version=0.0.1\nDEFAULT op=EXECUTE action=DENY\nDEFAULT op=FIRMWARE action=DENY\nDEFAULT op=KMODULE action=DENY\nDEFAULT op=KEXEC_IMAGE action=DENY\nDEFAULT op=KEXEC_INITRAMFS action=DENY\nDEFAULT op=POLICY action=DENY\n", // one per-op default short
	"policy_version=0.0.1 policy_name=fid_swapped\nDEFAULT action=ALLOW\n",
	"policy_name=fid_extra policy_version=0.0.1 extra\nDEFAULT action=ALLOW\n",
	"policy_name= policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=fid_v2 policy_version=0.0\nDEFAULT action=ALLOW\n",
	"policy_name=fid_v4 policy_version=1.2.3.4\nDEFAULT action=ALLOW\n",
	"policy_name=fid_vdot policy_version=0.\nDEFAULT action=ALLOW\n",
	"policy_name=fid_vneg policy_version=-1236.0.0\nDEFAULT action=ALLOW\n",
	"policy_name=fid_vbig policy_version=999999.0.0\nDEFAULT action=ALLOW\n",
	"policy_name=fid_vhex policy_version=0x1.0.0\nDEFAULT action=ALLOW\n",
	"policy_name=fid_vneg_junk policy_version=-1 junk\nDEFAULT action=ALLOW\n",
	"policy_name=fid_nodefault policy_version=0.0.1\nop=EXECUTE action=ALLOW\n",
	"policy_name=fid_twodefaults policy_version=0.0.1\nDEFAULT action=ALLOW\nDEFAULT action=DENY\n",
	"policy_name=fid_twoopdefaults policy_version=0.0.1\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n",
	"policy_name=fid_defprop policy_version=0.0.1\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE boot_verified=TRUE action=DENY\n",
	"policy_name=fid_defprop2 policy_version=0.0.1\nDEFAULT action=ALLOW\nDEFAULT dmverity_signature=TRUE action=DENY\n",
	"policy_name=fid_noop policy_version=0.0.1\nDEFAULT action=ALLOW\nboot_verified=TRUE action=ALLOW\n",
	"policy_name=fid_order policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE action=ALLOW boot_verified=TRUE\n",
	"policy_name=fid_badaction policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE action=allow\n",
	"policy_name=fid_badop policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXEC action=ALLOW\n",
	"policy_name=fid_badprop policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=true action=ALLOW\n",
	"policy_name=fid_nocolon policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=GOOD_DOG action=ALLOW\n",
	"policy_name=fid_oddhex policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:abc action=ALLOW\n",
	"policy_name=fid_badhex policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:zz action=ALLOW\n",
	"policy_name=fid_twocolons policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:ab:cd action=ALLOW\n",
	"# only a comment\n",
	"DEFAULT action=ALLOW\n",
	"policy_name=fid_vthenhex policy_version=99999.0.0\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:q action=ALLOW\n", // first error decides
	"policy_name=fid_vt policy_version=0.0.1\nDEFAULT\vaction=ALLOW\n",                                                            // \v inside a line is a token byte
}

// directoryNamePolicies are valid to the parser, but their names cannot
// name the securityfs directory IPE files a policy under, so the kernel
// refuses them after parsing: EACCES for '/', "." and "..", ENAMETOOLONG
// past 255 bytes.
var directoryNamePolicies = []string{
	"policy_name=fid/slash policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=. policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=.. policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=" + strings.Repeat("n", 256) + " policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	"policy_name=" + strings.Repeat("n", 255) + " policy_version=0.0.1\nDEFAULT action=ALLOW\n", // the longest that loads
}

// directoryNameRefusal says whether the kernel's errno for a policy the
// parser accepted is the securityfs directory refusing its name.
func directoryNameRefusal(text, errno string) bool {
	name, ok := kernelipe.HeaderName([]byte(text))
	if !ok {
		return false
	}
	switch errno {
	case "EACCES":
		return name == "." || name == ".." || strings.Contains(name, "/")
	case "ENAMETOOLONG":
		return len(name) > 255
	}
	return false
}

// validSeeds is how many of fidelitySeeds, from the start, are valid.
const validSeeds = 11

// mutationTokens are what a mutation inserts or swaps in: separators,
// comment and NUL bytes, and the grammar's own keywords, so mutants land
// near the boundaries of the grammar rather than in noise.
var mutationTokens = []string{
	" ", "\t", "\n", "\r", "#", "\x00", "\xa0", "\v", "=", ":", ".", "+", "-", "0", "9", "65536",
	"DEFAULT", "action=ALLOW", "action=DENY", "op=EXECUTE", "op=KMODULE", "op=POLICY",
	"boot_verified=TRUE", "dmverity_signature=FALSE", "fsverity_digest=sha256:00", "dmverity_roothash=",
	"policy_name=m", "policy_version=0.0.1", "ab", "z",
}

func mutate(r *rand.Rand, text string) string {
	b := []byte(text)
	for n := 1 + r.IntN(2); n > 0; n-- {
		pos := 0
		if len(b) > 0 {
			pos = r.IntN(len(b) + 1)
		}
		switch r.IntN(6) {
		case 0: // delete a run of bytes
			if len(b) > 0 && pos < len(b) {
				end := min(len(b), pos+1+r.IntN(6))
				b = append(b[:pos:pos], b[end:]...)
			}
		case 1, 2: // insert a token
			tok := mutationTokens[r.IntN(len(mutationTokens))]
			b = append(b[:pos:pos], append([]byte(tok), b[pos:]...)...)
		case 3: // swap two lines
			lines := strings.Split(string(b), "\n")
			if len(lines) > 1 {
				i, j := r.IntN(len(lines)), r.IntN(len(lines))
				lines[i], lines[j] = lines[j], lines[i]
				b = []byte(strings.Join(lines, "\n"))
			}
		case 4: // flip one byte to a printable one
			if pos < len(b) {
				b[pos] = byte(0x20 + r.IntN(0x5f))
			}
		case 5: // add a line that should change nothing, or repeat one
			lines := strings.Split(string(b), "\n")
			i := r.IntN(len(lines))
			extra := []string{"", "# comment", " \t ", "\r", lines[r.IntN(len(lines))]}[r.IntN(5)]
			lines = append(lines[:i:i], append([]string{extra}, lines[i:]...)...)
			b = []byte(strings.Join(lines, "\n"))
		}
	}
	return string(b)
}

// fidelityCorpus is the seeds and mutants, without duplicates and without
// the empty text (which cannot be signed with content attached).
func fidelityCorpus(mutants int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 0x1be))
	seen := map[string]bool{}
	var corpus []string
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			corpus = append(corpus, s)
		}
	}
	for _, s := range fidelitySeeds {
		add(s)
	}
	for _, s := range directoryNamePolicies {
		add(s)
	}
	for tries := 0; len(corpus) < len(fidelitySeeds)+len(directoryNamePolicies)+mutants && tries < 20*mutants; tries++ {
		// Half the mutants start from the leading seeds, which are valid,
		// so that acceptances are not drowned out.
		base := fidelitySeeds[r.IntN(len(fidelitySeeds))]
		if r.IntN(2) == 0 {
			base = fidelitySeeds[r.IntN(validSeeds)]
		}
		add(mutate(r, base))
	}
	return corpus
}

func TestFidelityCorpus(t *testing.T) {
	corpus := fidelityCorpus(300, 1)
	if len(corpus) < 300 {
		t.Fatalf("corpus has %d policies, want at least 300", len(corpus))
	}
	accepted := 0
	for _, text := range corpus {
		if _, err := policy.Parse("corpus", []byte(text)); err == nil {
			accepted++
		}
	}
	// A corpus of only rejections (or only acceptances) would test one
	// side of the parser.
	if accepted < len(corpus)/10 || accepted > len(corpus)*9/10 {
		t.Errorf("bpfipe's parser accepts %d of %d policies; the corpus is lopsided", accepted, len(corpus))
	}
	for i, text := range fidelitySeeds {
		_, err := policy.Parse("seed", []byte(text))
		if (err == nil) != (i < validSeeds) {
			t.Errorf("seed %d %q: parse error %v; the first %d seeds should be the valid ones", i, text, err, validSeeds)
		}
	}
	t.Logf("bpfipe's parser accepts %d of %d", accepted, len(corpus))
	again := fidelityCorpus(300, 1)
	if strings.Join(again, "\x01") != strings.Join(corpus, "\x01") {
		t.Error("the corpus is not reproducible from its seed")
	}
}

// TestParserFidelity signs every policy of the corpus, hands each to the
// kernel's new_policy in a guest, and requires bpfipe's parser to accept
// and reject the same ones, with the same errno.
func TestParserFidelity(t *testing.T) {
	seed := uint64(1)
	if v := os.Getenv("BPFIPE_FIDELITY_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BPFIPE_FIDELITY_SEED: %v", err)
		}
	}
	corpus := fidelityCorpus(400, seed)
	g := newGuest(t)
	dir := filepath.Join(g.work, "fidelity")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i, text := range corpus {
		blob, err := kernelipe.Sign([]byte(text), g.cert, g.key)
		if err != nil {
			t.Fatal(err)
		}
		file := fmt.Sprintf("%04d.p7s", i)
		if err := os.WriteFile(filepath.Join(dir, file), blob, 0o644); err != nil {
			t.Fatal(err)
		}
		want[file] = "OK"
		if _, err := policy.Parse(file, []byte(text)); err != nil {
			var errno syscall.Errno
			if !errors.As(err, &errno) {
				t.Fatalf("policy.Parse error without errno: %v", err)
			}
			want[file] = kernelipe.ErrnoName(errno)
		}
	}
	g.opts = append(g.opts, vmtest.WithAdd(dir, guestDir+"/fidelity"))
	status, output := g.run(guestRunner, "fidelity", "--manifest", guestManifest, guestDir+"/fidelity")
	lines, rest := prefixedLines(output, scenario.FidelityPrefix)
	if status != 0 {
		t.Fatalf("guest runner exited with status %d:\n%s", status, strings.Join(rest, "\n"))
	}
	got := map[string]scenario.FidelityResult{}
	for _, line := range lines {
		var res scenario.FidelityResult
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("read result %q: %v", line, err)
		}
		got[res.File] = res
	}
	files := make([]string, 0, len(want))
	for f := range want {
		files = append(files, f)
	}
	sort.Strings(files)
	counts := map[string]int{}
	knownDifferences := 0
	for _, f := range files {
		res, ok := got[f]
		if !ok {
			t.Errorf("%s: no answer from the kernel", f)
			continue
		}
		counts[res.Errno]++
		idx, _ := strconv.Atoi(strings.TrimSuffix(f, ".p7s"))
		switch {
		case res.Errno == want[f]:
		case want[f] == "OK" && directoryNameRefusal(corpus[idx], res.Errno):
			// Not the parser's doing: documented in docs/compare.md.
			knownDifferences++
			t.Logf("%s: known difference: the kernel refuses the name with %s after parsing, bpfipe's parser accepts %q", f, res.Errno, clip(corpus[idx]))
		default:
			t.Errorf("%s: kernel %s, bpfipe's parser %s, for %q", f, res.Errno, want[f], corpus[idx])
		}
		if res.DeleteError != "" {
			t.Errorf("%s: the kernel accepted it but would not delete it: %s", f, res.DeleteError)
		}
	}
	t.Logf("%d policies (seed %d); kernel answers: %v; known differences: %d", len(files), seed, counts, knownDifferences)
	if knownDifferences < len(directoryNamePolicies)-1 {
		t.Errorf("only %d of the %d directory-name policies were refused by the kernel", knownDifferences, len(directoryNamePolicies)-1)
	}
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
