-- Status and headers: set them before the first flush(); a returned number is the status.
response.headers["Content-Type"] = "text/plain; charset=utf-8"
response.headers["Cache-Control"] = "no-store"
if request.query.missing then
  print("nothing here")
  return 404
end
response.status = 201
print("created")
