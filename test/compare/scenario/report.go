package scenario

// Row is one line of the comparison table: one record of each enforcer
// for one operation (an operation makes as many rows as the longer list
// of records, at least one).
type Row struct {
	Op        int    `json:"op"` // 1-based index in the scenario
	Operation string `json:"operation"`
	IPE       string `json:"ipe_result"`
	Bpfipe    string `json:"bpfipe_result"`
	Hook      string `json:"hook"`
	Path      string `json:"path"`
	IPERule   string `json:"ipe_rule"`
	BpfRule   string `json:"bpfipe_rule"`
	// Verdict is VerdictAgree, VerdictDisagree, or "expected: WHY" for differences
	// bpfipe has by design (docs/ipe-differences.md).
	Verdict string   `json:"verdict"`
	Notes   []string `json:"notes,omitempty"`
}

// Report is one scenario's comparison, printed by the runner as one JSON
// line for the host test.
type Report struct {
	Scenario      string `json:"scenario"`
	Policy        string `json:"policy"`
	Rows          []Row  `json:"rows"`
	Disagreements int    `json:"disagreements"`
	Expected      int    `json:"expected_differences"`
	// Error says why the scenario could not be played.
	Error string `json:"error,omitempty"`
}

// Verdicts of a Row; a difference bpfipe has by design reads "expected: "
// and the reason.
const (
	VerdictAgree    = "agree"
	VerdictDisagree = "DISAGREE"
)

// ReportPrefix starts the runner's machine-readable lines: each is the
// prefix and one Report as JSON.
const ReportPrefix = "COMPARE-JSON "

// FidelityResult is what the kernel said to one policy of the parser
// fidelity corpus.
type FidelityResult struct {
	File string `json:"file"`
	// Errno is "OK" or the errno name new_policy returned.
	Errno string `json:"errno"`
	// Name is the name the kernel filed an accepted policy under.
	Name        string `json:"name,omitempty"`
	DeleteError string `json:"delete_error,omitempty"`
}

// FidelityPrefix starts each line of the runner's fidelity output.
const FidelityPrefix = "FIDELITY-JSON "
