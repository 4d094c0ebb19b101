// The caerd daemon for the end-to-end tests: the very source file of `caer-firmware`'s
// `caerd` binary, compiled into this package so that its integration tests get its path
// (`CARGO_BIN_EXE_caerd-e2e`). Nothing is added or changed here.
include!("../../../firmware/src/bin/caerd.rs");
