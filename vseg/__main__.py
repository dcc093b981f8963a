from vseg.cli import main

main()
