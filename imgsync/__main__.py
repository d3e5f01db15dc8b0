from imgsync.cli import main

main()
