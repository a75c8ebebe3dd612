//! Finding the Python interpreter that has the `ferry_worker` package installed: the rule
//! lives in the bench crate ([`ferry_bench::python`]), shared with the benches.
#![allow(unused_imports)]

pub use ferry_bench::python::{
    ferry_python, python_or_skip, transport_codec_cases, FERRY_PYTHON, FERRY_REQUIRE_PYTHON,
};
