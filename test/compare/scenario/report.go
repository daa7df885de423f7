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
	// Verdict is one of the Verdict constants.
	Verdict string `json:"verdict"`
	// Reason is the operation's expect_difference, on rows whose
	// verdict is VerdictExpected or VerdictUnexpectedAgreement.
	Reason string `json:"reason,omitempty"`
	// Notes say what differs, or what was expected and not seen.
	Notes []string `json:"notes,omitempty"`
	// IPERecord and BpfipeRecord are the two records as printed: the
	// kernel's audit text and bpfipe's `bpfipe events` line.
	IPERecord    string `json:"ipe_record,omitempty"`
	BpfipeRecord string `json:"bpfipe_record,omitempty"`
	// Documented are differences docs/ipe-differences.md lists for every
	// record (a path bpfipe cut at 255 bytes); they leave the verdict
	// alone and are printed all the same.
	Documented []string `json:"documented,omitempty"`
}

// Report is one scenario's comparison, printed by the runner as one JSON
// line for the host test.
type Report struct {
	Scenario string `json:"scenario"`
	Policy   string `json:"policy"`
	Rows     []Row  `json:"rows"`
	// Counts of rows by verdict.
	Agreements           int `json:"agreements"`
	Disagreements        int `json:"disagreements"`
	Expected             int `json:"expected_differences"`
	UnexpectedAgreements int `json:"unexpected_agreements"`
	Unexpected           int `json:"unexpected_outcomes"`
	// Error says why the scenario could not be played.
	Error string `json:"error,omitempty"`
}

// Failed says the scenario shows something the suite does not accept.
func (r *Report) Failed() bool {
	return r.Error != "" || r.Disagreements+r.UnexpectedAgreements+r.Unexpected > 0
}

// Verdicts of a Row.
const (
	// VerdictAgree: both enforcers did and recorded the same.
	VerdictAgree = "agree"
	// VerdictDisagree: a difference the scenario does not expect, or one
	// in more than the decision of an operation that expects one.
	VerdictDisagree = "DISAGREE"
	// VerdictExpected: a difference in the decision (outcome, rule,
	// action, a record only one enforcer makes) of an operation whose
	// expect_difference says why.
	VerdictExpected = "EXPECTED DIFFERENCE"
	// VerdictUnexpectedAgreement: the operation expects a difference
	// and both enforcers decided alike.
	VerdictUnexpectedAgreement = "UNEXPECTED AGREEMENT"
	// VerdictUnexpected: the enforcers agree with each other but not
	// with what the scenario expects (outcome or hooks).
	VerdictUnexpected = "UNEXPECTED"
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
