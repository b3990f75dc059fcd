from api.spreadsheet_cells import cell


def test_text_that_a_spreadsheet_would_run_is_kept_as_text_and_numbers_are_untouched():
    for formula in ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert cell(formula) == "'" + formula
    assert cell("prod key") == "prod key" and cell("acme/gpt-4o") == "acme/gpt-4o"
    assert cell(-1.5) == -1.5 and cell(0) == 0 and cell(None) == "" and cell(True) is True
    assert cell("0.000150") == "0.000150"  # exact money stays exact
