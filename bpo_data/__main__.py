from bpo_data.cli import app

app(prog_name="bpo-data")
