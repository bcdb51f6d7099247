"""One number style: accuracies in percent with one decimal, other figures to three significant figures."""

import math

from sslstudio.figures import metric_text, pct, sig3


def test_percent_with_one_decimal():
    assert pct(0.4128) == "41.3%" and pct(0.01026) == "1.0%" and pct(1.0) == "100.0%"
    assert pct(None) == "n/a" and pct(math.nan) == "n/a"


def test_three_significant_figures_without_exponents():
    cases = {4.70771: "4.71", 0.0102634: "0.0103", 1234.5: "1230", 0.5: "0.500", 99.96: "100",
             -3.14159: "-3.14", 0.25234375: "0.252", 0: "0"}
    assert {v: sig3(v) for v in cases} == cases
    assert sig3(None) == "n/a" and sig3(math.inf) == "inf"


def test_a_metric_reads_in_its_own_unit():
    assert metric_text("accuracy", 0.25234375) == "25.2%"
    assert metric_text("psnr", 21.456) == "21.5 dB"
    assert metric_text("accuracy", None) == "n/a"


def test_a_file_size_reads_in_a_unit_that_fits():
    from sslstudio.figures import size_text

    assert size_text(0) == "0 bytes" and size_text(1) == "1 byte" and size_text(512) == "512 bytes"
    assert size_text(999) == "999 bytes" and size_text(1000) == "1.00 KB" and size_text(1234) == "1.23 KB"
    assert size_text(44_712_345) == "44.7 MB" and size_text(1_200_000_000) == "1.20 GB"
    assert size_text(999_960) == "1.00 MB"  # rounding up carries to the next unit, never "1000 KB"
    assert size_text(123_456) == "123 KB" and size_text(None) == "n/a"
