"""`python -m enrichment_assets.cli ...`: the `enrich` command."""

from enrichment_assets.cli.commands import console_main

if __name__ == "__main__":
    console_main()
