from mfclip_cli.cli import main

main()
