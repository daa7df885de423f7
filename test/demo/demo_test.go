package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

// transcriptBlock is one command of the story and what it printed.
type transcriptBlock struct {
	command string
	output  []string
}

// parseTranscript splits the guest's output into the commands it ran; a
// narration line (a step number) ends a command's output.
func parseTranscript(out string) []transcriptBlock {
	var blocks []transcriptBlock
	inBlock := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "guest$ "):
			blocks = append(blocks, transcriptBlock{command: strings.TrimPrefix(line, "guest$ ")})
			inBlock = true
		case line == "" || startsStep(line):
			inBlock = false
		case inBlock:
			b := &blocks[len(blocks)-1]
			b.output = append(b.output, line)
		}
	}
	return blocks
}

func startsStep(line string) bool {
	number, _, ok := strings.Cut(line, ". ")
	return ok && number != "" && strings.Trim(number, "0123456789") == ""
}

func outputsOf(blocks []transcriptBlock, command string) [][]string {
	var outs [][]string
	for _, b := range blocks {
		if b.command == command {
			outs = append(outs, b.output)
		}
	}
	return outs
}

func requireImageTools(t *testing.T) {
	t.Helper()
	for tool := range imageTools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (failing because CI=true): %v", tool, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

func buildTestImage(t *testing.T) (image, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	requireImageTools(t)
	sourceDir, err := vm.SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	var transcript bytes.Buffer
	img, err := buildImage(context.Background(), sourceDir, t.TempDir(), &transcript)
	if err != nil {
		t.Fatalf("buildImage: %v\n%s", err, transcript.String())
	}
	if len(img.RootHash) != 64 {
		t.Fatalf("root hash %q is not a sha256 in hex", img.RootHash)
	}
	return img, sourceDir
}

func runStory(t *testing.T, g guest) (int, string, error) {
	t.Helper()
	cfg := g.config()
	var out bytes.Buffer
	cfg.Stdout = &out
	if os.Getenv(vmtest.VerboseEnv) == "1" {
		cfg.Verbose = true
	}
	status, err := vm.Run(context.Background(), cfg, g.argv())
	return status, out.String(), err
}

// TestDemoStory plays the demo's guest part on every stock kernel and
// checks the turns of the story from the transcript: the image's program
// runs, its copy in /tmp is denied with the shell's EACCES message, the
// denial is reported as IPE reports it, permissive mode lets the copy run
// and says enforcing=0, and after unload the copy runs.
func TestDemoStory(t *testing.T) {
	img, sourceDir := buildTestImage(t)
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.Require(t, kernel)
			status, out, err := runStory(t, guest{kernel: kernel, image: img, sourceDir: sourceDir})
			if err != nil || status != 0 {
				t.Fatalf("story = %d, %v; transcript:\n%s", status, err, out)
			}
			blocks := parseTranscript(out)

			devices := outputsOf(blocks, "bpfipe devices")
			if len(devices) != 1 || !strings.Contains(strings.Join(devices[0], "\n"), "sha256:"+img.RootHash) {
				t.Errorf("bpfipe devices does not show the image's root hash %s: %q", img.RootHash, devices)
			}

			if trusted := outputsOf(blocks, "/mnt/trusted/bin/hello"); len(trusted) != 1 ||
				strings.Join(trusted[0], "\n") != "hello from /mnt/trusted/bin/hello" {
				t.Errorf("the image's program printed %q, want its greeting", trusted)
			}

			// Enforcing, permissive, enforcing again, unloaded.
			denied := "sh: /tmp/hello: Permission denied"
			ran := "hello from /tmp/hello"
			want := []string{denied, ran, denied, ran}
			var got []string
			for _, o := range outputsOf(blocks, "/tmp/hello") {
				got = append(got, strings.Join(o, "\n"))
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("the /tmp copy's runs printed %q, want %q", got, want)
			}

			events := outputsOf(blocks, "bpfipe events")
			if len(events) != 2 {
				t.Fatalf("%d bpfipe events commands in the transcript, want 2:\n%s", len(events), out)
			}
			for i, enforcing := range []string{"1", "0"} {
				if !hasRecord(events[i], "ipe_op=EXECUTE", "ipe_hook=BPRM_CHECK", "enforcing="+enforcing,
					`path="/tmp/hello"`, `dev="tmpfs"`, `rule="DEFAULT op=EXECUTE action=DENY"`) {
					t.Errorf("events #%d have no BPRM_CHECK record of /tmp/hello with enforcing=%s and the EXECUTE default's rule:\n%s",
						i+1, enforcing, strings.Join(events[i], "\n"))
				}
			}
			// The first exec of the copy was denied before it could map
			// anything, so no MMAP record can be in the enforcing batch.
			if hasRecord(events[0], "ipe_hook=MMAP", `path="/tmp/hello"`) {
				t.Errorf("an MMAP record of the denied copy:\n%s", strings.Join(events[0], "\n"))
			}
		})
	}
}

// TestDemoStoryFailsWhenAStepMisbehaves gives the story a root hash that is
// not the image's: the first step must stop the demo with a non-zero
// status, which is what makes the demo a smoke test.
func TestDemoStoryFailsWhenAStepMisbehaves(t *testing.T) {
	img, sourceDir := buildTestImage(t)
	vmtest.Require(t, "debian-6.1")
	img.RootHash = strings.Repeat("ab", 32)
	g := guest{kernel: "debian-6.1", image: img, sourceDir: sourceDir}
	// The device still opens with the right hash from the sidecar; only
	// the story's expectation is wrong.
	status, out, err := runStory(t, g)
	if err != nil {
		t.Fatalf("story: %v\n%s", err, out)
	}
	if status == 0 || !strings.Contains(out, "demo: step 1 did not go as the story says") {
		t.Errorf("story with a wrong expectation = status %d; transcript:\n%s", status, out)
	}
	if strings.Contains(out, "\n2. ") {
		t.Errorf("the story went on after the failed step:\n%s", out)
	}
}

// hasRecord reports whether one line holds every field, each as a whole
// space-separated word (the rule field is the line's last, spaces and all).
func hasRecord(lines []string, fields ...string) bool {
	for _, line := range lines {
		padded := " " + line + " "
		all := true
		for _, f := range fields {
			if !strings.Contains(padded, " "+f+" ") {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func TestRootHashFrom(t *testing.T) {
	report := "VERITY header information for h.img\nUUID:            \tx\nSalt:            \t00ff\n" +
		"Root hash:      \t0123abcd\nHash device size: \t4096 [bytes]\n"
	if got, err := rootHashFrom([]byte(report)); err != nil || got != "0123abcd" {
		t.Errorf("rootHashFrom = %q, %v; want 0123abcd", got, err)
	}
	if _, err := rootHashFrom([]byte("Salt: 00\n")); err == nil {
		t.Error("rootHashFrom found a root hash in a report without one")
	}
}

func TestCommandLineQuotesAndBreaksBeforeFlags(t *testing.T) {
	g := guest{kernel: "debian-6.1", sourceDir: "/src",
		image: image{Data: "/c/my img", Hash: "/c/h", RootHash: "ab"}}
	got := g.commandLine()
	for _, want := range []string{
		"bin/bpfipe-vm run \\\n      --kernel debian-6.1",
		"--verity 'trusted=/c/my img:/c/h'",
		"--add test/demo/story.sh:/opt/bpfipe-demo/story.sh",
		"--add examples/demo.pol:/opt/bpfipe-demo/demo.pol",
		"--env DEMO_ROOT_HASH=ab",
		"-- sh /opt/bpfipe-demo/story.sh",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("command line lacks %q:\n%s", want, got)
		}
	}
}
