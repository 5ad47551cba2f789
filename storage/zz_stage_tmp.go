package storage

// TEMPORARY (lead's placeholder until branch stage merges).

const StageDir = "catchup"

type Stage interface {
	Log
	Truncater
	Reset(start int64) error
}

type Stager interface {
	OpenStage() (Stage, error)
	Adopt(stage Stage) error
	DropStage() error
}
